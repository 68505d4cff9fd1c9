//! Settings that are valid but weaken the stack's security: said on every `validate`, `plan`
//! and `up`, so the choice stays visible.

use super::Stack;

/// One sentence per risky setting, each naming its key and what it means.
pub fn warnings(stack: &Stack) -> Vec<String> {
    let s = &stack.spec;
    let mut out = Vec::new();
    if let Some(cidr) = &s.network.ssh_from {
        if cidr.ends_with("/0") {
            out.push(format!(
                "network.ssh_from: {cidr} opens SSH (port 22) to every address on the internet, \
                 where bots try to log in all day; give your own address (`<ip>/32`), or leave \
                 the key out to keep port 22 closed"
            ));
        }
    }
    let hops = s.instance.metadata_hop_limit;
    if hops > 1 {
        out.push(format!(
            "instance.metadata_hop_limit: {hops} lets the containers on the instances reach the \
             metadata service and read the instance role's credentials; 1 (the default) keeps \
             them to the host"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: &str) -> Stack {
        let text = format!("name: w\ntier: single-vm\napp:\n  image: nginx:1\n{extra}");
        super::super::parse(std::path::Path::new("s.yaml"), &text).expect("valid")
    }

    #[test]
    fn ssh_from_anywhere_and_a_raised_hop_limit_are_warned_about() {
        assert!(warnings(&stack("network:\n  ssh_from: 203.0.113.7/32\n")).is_empty());
        let w = warnings(&stack(
            "network:\n  ssh_from: 0.0.0.0/0\ninstance:\n  metadata_hop_limit: 2\n",
        ));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("every address on the internet"), "{}", w[0]);
        assert!(w[1].contains("credentials"), "{}", w[1]);
    }
}
