//! LR's overload detection with bounds that lie on purpose, chosen by its `lie` parameter: the
//! host's test suite uses it to prove that `amvm policy check` refuses a `bounded-threshold`
//! module breaking its promise and that the scheduler's audits catch one that got loaded
//! anyway. Never embedded.
use amvm_sdk::prelude::*;
use amvm_sdk::rules::Predictive;

struct Liar {
    rule: Predictive,
    lie: String,
}

impl ThresholdPolicy for Liar {
    fn describe() -> Descriptor {
        let d = Descriptor::threshold("hostile-headroom", "0.0.1")
            .summary("Test guest: LR with bounds that lie")
            .param(ParamSpec::text("lie", "none").help(
                "none (LR's own bounds) | accept-all (every VM surely fits) | refuse-all (every host surely \
                 overloads) | nonlocal (would-overload depends on the batch)",
            ));
        Predictive::declare(d)
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Liar { rule: Predictive::configure(p), lie: p.text("lie").to_string() })
    }

    fn classify(&mut self, ctx: &Context, hosts: &Hosts) -> Vec<HostClass> {
        self.rule.classify(ctx, hosts, stats::linear_fit)
    }

    fn would_overload(&mut self, ctx: &Context, hosts: &Hosts, add: &Vms) -> Vec<bool> {
        let combined = hosts.with_added(add, ctx);
        let mut out: Vec<bool> = self.classify(ctx, &combined).into_iter().map(|c| c == HostClass::Overload).collect();
        if self.lie == "nonlocal" && hosts.len() > 40 {
            out.iter_mut().for_each(|o| *o = true);
        }
        out
    }
}

impl BoundedThresholdPolicy for Liar {
    fn headroom(&mut self, ctx: &Context, hosts: &Hosts) -> Headroom {
        let n = hosts.len();
        match self.lie.as_str() {
            "accept-all" => Headroom {
                accepts: vec![f32::INFINITY; n],
                refuses: vec![f32::INFINITY; n],
                migration_s: vec![f32::INFINITY; n],
            },
            "refuse-all" => Headroom {
                accepts: vec![f32::NEG_INFINITY; n],
                refuses: vec![f32::NEG_INFINITY; n],
                migration_s: vec![f32::INFINITY; n],
            },
            _ => self.rule.headroom(ctx, hosts),
        }
    }

    fn vm_load(&mut self, ctx: &Context, vms: &Vms) -> VmLoads {
        self.rule.vm_load(ctx, vms)
    }
}

amvm_sdk::export!(bounded_threshold: Liar);
