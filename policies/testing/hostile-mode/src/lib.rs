//! A migration-mode policy that misbehaves on purpose (`act`: ok | short | trap). `ok` answers
//! post-copy for every move, so a test can tell its answers from the built-in model's.
//! Test suite only.
use amvm_sdk::prelude::*;

struct Hostile {
    act: String,
}

impl MigrationModePolicy for Hostile {
    fn describe() -> Descriptor {
        Descriptor::migration_mode("hostile-mode", "0.0.1")
            .summary("Test guest that misbehaves on purpose")
            .param(ParamSpec::text("act", "ok").help("ok (post-copy for every move) | short (one mode too few) | trap"))
    }

    fn configure(p: &Params) -> Result<Self, String> {
        Ok(Hostile { act: p.text("act").to_string() })
    }

    fn choose_mode(&mut self, _: &Context, moves: &Moves) -> Vec<Mode> {
        match self.act.as_str() {
            "short" => vec![Mode::Post; moves.len().saturating_sub(1)],
            "trap" => panic!("hostile-mode traps on purpose"),
            _ => vec![Mode::Post; moves.len()],
        }
    }
}

amvm_sdk::export!(migration_mode: Hostile);
