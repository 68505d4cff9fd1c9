//! EFS: the file system (kept by `down` as data unless `--delete-data`) and its mount targets,
//! one per subnet.

use std::time::Duration;

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::aws::error::AwsError;
use crate::aws::{efs, tags, Aws};
use crate::plan::compare::{kind_changed, protection, update_if, Compare, Context};
use crate::plan::*;

pub struct FileSystems;

/// How long a file system or mount target may take to be available or gone.
const EFS: Duration = Duration::from_secs(600);

/// The mount targets being waited on (life-cycle state by id): one DescribeMountTargets of their
/// file system per round answers all of them.
pub(super) type MountTargetPolls = super::polls::SharedPolls<String>;

impl Applier {
    /// Waits for mount target `mt` of file system `fs` to reach `want` (`None`: to be gone).
    async fn wait_mount_target(
        &self,
        id: &ResourceId,
        what: &str,
        fs: &str,
        mt: &str,
        want: Option<&str>,
    ) -> Result<(), AwsError> {
        let polls = &self.mount_target_polls;
        let _waiting = polls.waiting(mt);
        self.wait_state(id, what, EFS, want, || {
            polls.get(mt, |_| efs::mount_target_states(&self.aws, fs))
        })
        .await
    }
}

#[async_trait::async_trait]
impl Provider for FileSystems {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::FileSystem, Kind::MountTarget]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(efs::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let aws = &cx.aws;
        let id = match &r.spec {
            Spec::FileSystem(s) => {
                let mut t = cx.tags_for(&r.id, r.kind());
                if s.keep_on_down {
                    t.insert(tags::DATA.to_string(), "true".to_string());
                }
                efs::create_file_system(aws, s, &t).await?
            }
            Spec::MountTarget(s) => {
                let fs = cx
                    .need(&s.file_system, "efs:CreateMountTarget")?
                    .physical_id;
                let sgs = cx.ids(&s.security_groups, "efs:CreateMountTarget")?;
                efs::create_mount_target(aws, &fs, &s.subnet_id, sgs).await?
            }
            _ => return Err(not_mine(r)),
        };
        cx.remember(&r.id, Known::id(&id));
        Ok(Some(id))
    }

    /// Available: mounting needs both.
    async fn wait_ready(
        &self,
        cx: &Applier,
        r: &Resource,
        physical_id: &str,
    ) -> Result<(), AwsError> {
        let aws = &cx.aws;
        match &r.spec {
            Spec::FileSystem(_) => {
                let what = format!("file system {physical_id} to be available");
                cx.wait_state(&r.id, &what, EFS, Some("available"), || {
                    efs::file_system_state(aws, physical_id)
                })
                .await
            }
            Spec::MountTarget(s) => {
                let what = format!(
                    "mount target {physical_id} in {} to be available",
                    s.subnet_id
                );
                let fs = cx.need(&s.file_system, "efs:DescribeMountTargets")?;
                cx.wait_mount_target(
                    &r.id,
                    &what,
                    &fs.physical_id,
                    physical_id,
                    Some("available"),
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// The only change in place: a file system's `protect`.
    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let id = &actual.physical_id;
        if let Spec::FileSystem(s) = &r.spec {
            efs::set_protected(&cx.aws, id, s.protected).await?;
            self.wait_ready(cx, r, id).await?;
        }
        cx.remember(&r.id, Known::id(id));
        Ok(Some(id.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let (aws, id) = (&cx.aws, &o.physical_id);
        match o.kind {
            Kind::MountTarget => efs::delete_mount_target(aws, id).await,
            Kind::FileSystem => {
                cx.retry_in_use(&o.id, &format!("file system {id} to be free"), || {
                    efs::delete_file_system(aws, id)
                })
                .await
            }
            _ => Ok(()),
        }
    }

    /// A mount target gone (the file system can go only then).
    async fn wait_gone(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        let Details::MountTarget { file_system_id, .. } = &o.details else {
            return Ok(());
        };
        let id = &o.physical_id;
        let what = format!("mount target {id} to be deleted");
        cx.wait_mount_target(&o.id, &what, file_system_id, id, None)
            .await
    }
}

impl Compare for FileSystemSpec {
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        let Details::FileSystem { protected, .. } = &found.details else {
            return kind_changed();
        };
        update_if(if *protected == self.protected {
            vec![]
        } else {
            vec![protection(self.protected)]
        })
    }
}

impl Compare for MountTargetSpec {
    /// Kept as found: a mount target is its subnet and file system, both in its id.
    fn compare(&self, found: &Observed, _: &Context) -> Action {
        match found.details {
            Details::MountTarget { .. } => Action::Keep,
            _ => kind_changed(),
        }
    }
}
