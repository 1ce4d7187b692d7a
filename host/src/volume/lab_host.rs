//! [`GuestHost`] on an `amvm lab` (libvirt nodes in namespaces): a node's initiator is its lab
//! address, guests are found and moved through each node's libvirt daemon.

use amvm_engine::memory::Mode;
use amvm_engine::qemu::MigrateOptions;
use amvm_engine::volume::Initiator;
use anyhow::Context;

use super::{GuestHost, NodeRef};
use crate::lab::{self, LabState, NodeRecord};

#[derive(Debug, Clone)]
pub struct LabHost {
    pub state: LabState,
    /// Options of each migration (`mode` replaced by the move's, when it names one).
    pub opts: MigrateOptions,
}

fn node_ref(n: &NodeRecord) -> anyhow::Result<NodeRef> {
    Ok(NodeRef {
        name: n.name.clone(),
        uri: n.uri(),
        initiator: Initiator::parse(&n.ip).with_context(|| format!("node {}'s address", n.name))?,
    })
}

impl GuestHost for LabHost {
    fn locate(&self, vm: &str) -> anyhow::Result<NodeRef> {
        node_ref(lab::locate(&self.state, vm)?)
    }

    fn node(&self, name: &str) -> anyhow::Result<NodeRef> {
        node_ref(self.state.node(name)?)
    }

    fn migrate(&self, vm: &str, _from: &NodeRef, to: &NodeRef, mode: Option<Mode>) -> anyhow::Result<()> {
        let mut opts = self.opts.clone();
        if let Some(m) = mode {
            opts.mode = m;
        }
        lab::migrate(&self.state, vm, &to.name, &opts, None, &mut |_| {}).map(drop)
    }

    /// Active on two nodes (source and incoming), or a job on one of them.
    fn migrating(&self, vm: &str) -> anyhow::Result<bool> {
        let mut active = 0;
        for n in &self.state.nodes {
            if lab::live::frozen(&self.state, n) {
                continue;
            }
            // A node whose libvirtd does not answer runs nothing we could see (as `locate`).
            let Ok((on, job)) = amvm_engine::qemu::libvirt::domain_activity(&n.uri(), vm) else { continue };
            if job {
                return Ok(true);
            }
            active += usize::from(on);
        }
        Ok(active > 1)
    }
}
