//! A selection policy that answers nonsense on purpose (`mode`: ok | out-of-range | duplicate).
//! Test suite only.
use amvm_sdk::prelude::*;

struct Hostile {
    mode: String,
}

impl SelectionPolicy for Hostile {
    fn describe() -> Descriptor {
        Descriptor::selection("hostile-selection", "0.0.1")
            .summary("Test guest that misbehaves on purpose")
            .param(ParamSpec::text("mode", "ok").help("ok | out-of-range | duplicate"))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Hostile { mode: p.text("mode").to_string() })
    }

    fn select(&mut self, _: &Context, _: &Hosts, vms: &Vms) -> Vec<usize> {
        match self.mode.as_str() {
            "out-of-range" => vec![vms.len() + 5],
            "duplicate" => vec![0, 0],
            _ => (0..vms.len()).collect(),
        }
    }
}

amvm_sdk::export!(selection: Hostile);
