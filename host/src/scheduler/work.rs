//! The scheduler's working copy of a snapshot: host histories derived from the VMs, loads, and
//! the VM→host mapping as the plan changes it. Columnar, and shaped like the batches sent to
//! the policies so the biggest batch (all hosts) goes out without copying.

use crate::policy::types;

use super::snapshot::{HostState, Snapshot};

pub(crate) struct Work<'a> {
    pub snap: &'a Snapshot,
    pub w: usize,
    /// All hosts as a threshold batch; `cpu` (and `mem`) change as VMs move.
    pub hosts: types::Hosts,
    /// Per history cell, how many VMs contributed a valid sample.
    valid: Vec<u16>,
    /// CPU in use now (MIPS) and memory allocated (MB), per host.
    pub cpu_used: Vec<f32>,
    pub mem_used: Vec<f32>,
    /// VM indexes per host, as planned.
    pub vms_on: Vec<Vec<usize>>,
    /// Planned host index per VM.
    pub vm_host: Vec<usize>,
    /// Migrations touching each host: in flight plus planned.
    pub migrations: Vec<u32>,
    /// Planned migrations into each host (operator rules' inflow limit).
    pub inflow: Vec<u32>,
    pub state: Vec<HostState>,
    /// Hosts whose `cpu_used` changed since the candidate index last looked (`index.rs`).
    pub dirty: Vec<usize>,
    /// Changes to each host's VMs so far: a bound computed at one version holds while it lasts.
    pub version: Vec<u64>,
}

impl<'a> Work<'a> {
    pub fn new(snap: &'a Snapshot) -> Work<'a> {
        let n = snap.hosts.len();
        let w = snap.window.max(1);
        let mut work = Work {
            snap,
            w,
            hosts: types::Hosts {
                n: n as u32,
                window: w as u32,
                cpu: vec![f32::NAN; n * w],
                mem: if snap.hosts.mem_history.len() == n * w { snap.hosts.mem_history.clone() } else { Vec::new() },
                net: if snap.hosts.net_history.len() == n * w { snap.hosts.net_history.clone() } else { Vec::new() },
                cpu_capacity: snap.hosts.cpu_capacity.clone(),
                mem_capacity: snap.hosts.mem_capacity.clone(),
                max_migration_s: vec![0.0; n],
                vm_count: vec![0; n],
            },
            valid: vec![0; n * w],
            cpu_used: vec![0.0; n],
            mem_used: vec![0.0; n],
            vms_on: vec![Vec::new(); n],
            vm_host: vec![usize::MAX; snap.vms.len()],
            migrations: snap.hosts.migrations_in_flight.clone(),
            inflow: vec![0; n],
            state: snap.hosts.state.clone(),
            dirty: Vec::new(),
            version: vec![0; n],
        };
        let mut per_host = vec![0usize; n];
        for &h in &snap.vms.host {
            if let Some(c) = per_host.get_mut(h as usize) {
                *c += 1;
            }
        }
        for (list, &count) in work.vms_on.iter_mut().zip(&per_host) {
            list.reserve_exact(count);
        }
        for vm in 0..snap.vms.len() {
            let h = snap.vms.host[vm] as usize;
            if h < n {
                work.add(vm, h, false);
            }
        }
        for h in 0..n {
            work.refresh_migration_time(h);
        }
        work.dirty.clear();
        work
    }

    pub fn vm_row(&self, vm: usize) -> &[f32] {
        &self.snap.vms.cpu_history[vm * self.w..(vm + 1) * self.w]
    }

    pub fn demand(&self, vm: usize) -> f32 {
        self.snap.vm_demand_mips(vm)
    }

    pub fn migration_s(&self, vm: usize) -> f32 {
        let bw = self.snap.migration_bandwidth_mbps;
        if bw > 0.0 {
            self.snap.vms.ram_mb[vm] / bw + self.snap.vms.extra_migration_s(vm)
        } else {
            0.0
        }
    }

    /// Current CPU utilization of host `h` (fraction of capacity).
    pub fn util(&self, h: usize) -> f32 {
        let cap = self.hosts.cpu_capacity[h];
        if cap > 0.0 {
            self.cpu_used[h] / cap
        } else {
            0.0
        }
    }

    fn apply(&mut self, vm: usize, h: usize, sign: f32, adjust_mem_history: bool) {
        let w = self.w;
        let cap = self.hosts.cpu_capacity[h];
        let scale = if cap > 0.0 { self.snap.vms.mips[vm] / cap } else { 0.0 };
        for t in 0..w {
            let v = self.snap.vms.cpu_history[vm * w + t];
            if v.is_nan() {
                continue;
            }
            let cell = h * w + t;
            if sign > 0.0 {
                self.valid[cell] += 1;
                let old = self.hosts.cpu[cell];
                self.hosts.cpu[cell] = if old.is_nan() { v * scale } else { old + v * scale };
            } else {
                self.valid[cell] = self.valid[cell].saturating_sub(1);
                self.hosts.cpu[cell] = if self.valid[cell] == 0 { f32::NAN } else { self.hosts.cpu[cell] - v * scale };
            }
        }
        let ram = self.snap.vms.ram_mb[vm];
        self.cpu_used[h] += sign * self.demand(vm);
        self.dirty.push(h);
        self.version[h] += 1;
        self.mem_used[h] += sign * ram;
        if adjust_mem_history && !self.hosts.mem.is_empty() {
            let mem_cap = self.hosts.mem_capacity[h];
            if mem_cap > 0.0 {
                for cell in &mut self.hosts.mem[h * w..(h + 1) * w] {
                    if !cell.is_nan() {
                        *cell += sign * ram / mem_cap;
                    }
                }
            }
        }
    }

    fn refresh_migration_time(&mut self, h: usize) {
        let longest = self.vms_on[h].iter().map(|&vm| self.migration_s(vm)).fold(0.0f32, f32::max);
        self.hosts.max_migration_s[h] = longest;
        self.hosts.vm_count[h] = self.vms_on[h].len() as u32;
    }

    /// Puts `vm` on `h` without refreshing the host's migration time (`moved`: the VM's memory
    /// joins the host's memory history too).
    fn add(&mut self, vm: usize, h: usize, moved: bool) {
        self.apply(vm, h, 1.0, moved);
        self.vms_on[h].push(vm);
        self.vm_host[vm] = h;
    }

    /// Moves `vm` onto `h` in the plan being built.
    fn attach(&mut self, vm: usize, h: usize) {
        self.add(vm, h, true);
        self.refresh_migration_time(h);
    }

    /// Places a detached `vm` (taken off `from`) on `to`: a planned migration.
    pub fn place(&mut self, vm: usize, from: usize, to: usize) {
        self.attach(vm, to);
        self.migrations[from] += 1;
        self.migrations[to] += 1;
        self.inflow[to] += 1;
    }

    /// Takes `vm` off its planned host (it is in transit in the plan being built).
    pub fn detach(&mut self, vm: usize) {
        let h = self.vm_host[vm];
        if h == usize::MAX {
            return;
        }
        self.apply(vm, h, -1.0, true);
        self.vms_on[h].retain(|&v| v != vm);
        self.vm_host[vm] = usize::MAX;
        self.refresh_migration_time(h);
    }

    /// Puts a detached `vm` back on `h` without counting a migration.
    pub fn reattach(&mut self, vm: usize, h: usize) {
        self.attach(vm, h);
    }

    /// Undoes a planned move of `vm` from `from` to `to`.
    pub fn undo_move(&mut self, vm: usize, from: usize, to: usize) {
        self.detach(vm);
        self.attach(vm, from);
        self.migrations[from] = self.migrations[from].saturating_sub(1);
        self.migrations[to] = self.migrations[to].saturating_sub(1);
        self.inflow[to] = self.inflow[to].saturating_sub(1);
    }

    /// A threshold batch of the given hosts (copies their rows).
    pub fn host_batch(&self, idx: &[usize]) -> types::Hosts {
        let w = self.w;
        let rows = |col: &Vec<f32>| -> Vec<f32> {
            if col.is_empty() {
                return Vec::new();
            }
            let mut out = Vec::with_capacity(idx.len() * w);
            for &h in idx {
                out.extend_from_slice(&col[h * w..(h + 1) * w]);
            }
            out
        };
        types::Hosts {
            n: idx.len() as u32,
            window: w as u32,
            cpu: rows(&self.hosts.cpu),
            mem: rows(&self.hosts.mem),
            net: rows(&self.hosts.net),
            cpu_capacity: idx.iter().map(|&h| self.hosts.cpu_capacity[h]).collect(),
            mem_capacity: idx.iter().map(|&h| self.hosts.mem_capacity[h]).collect(),
            max_migration_s: idx.iter().map(|&h| self.hosts.max_migration_s[h]).collect(),
            vm_count: idx.iter().map(|&h| self.hosts.vm_count[h]).collect(),
        }
    }

    /// A VM batch of the given VMs.
    pub fn vm_batch(&self, idx: &[usize]) -> types::Vms {
        types::Vms {
            n: idx.len() as u32,
            window: self.w as u32,
            cpu: idx.iter().flat_map(|&v| self.vm_row(v).iter().copied()).collect(),
            mips: idx.iter().map(|&v| self.snap.vms.mips[v]).collect(),
            ram_mb: idx.iter().map(|&v| self.snap.vms.ram_mb[v]).collect(),
        }
    }

    /// [`Self::vm_batch`] for VM selection: `ram-mb` is each VM's migration cost in MB of the
    /// migration link, its RAM plus what its move costs besides (volumes: the seconds of
    /// remapping × the bandwidth), so that a policy minimising migration time (MMT) counts it.
    pub fn selection_batch(&self, idx: &[usize]) -> types::Vms {
        let mut b = self.vm_batch(idx);
        let bw = self.snap.migration_bandwidth_mbps.max(0.0);
        for (r, &v) in b.ram_mb.iter_mut().zip(idx) {
            *r += self.snap.vms.extra_migration_s(v) * bw;
        }
        b
    }
}
