//! `amvm ctl`: a command-line client of the controller's API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `amvm ctl`.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Controller URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// World, strategy, cluster summary and the last cycle.
    Status,
    /// Hosts with state, CPU, memory, power and VM count.
    Hosts,
    /// Plans (newest first).
    Plans {
        /// Only plans in this state (RECOMMENDED, APPROVED, ONGOING, DONE, …).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One plan with its decision trace.
    Plan { id: i64 },
    /// Approve a RECOMMENDED plan.
    Approve { id: i64 },
    /// Reject a RECOMMENDED plan.
    Reject {
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Upload a policy module (.wasm): checked as `amvm policy check`.
    Upload { file: PathBuf },
    /// Create a strategy version from a TOML file or a built-in name.
    Strategy {
        /// TOML file or built-in name (`lr-mmt-1.2`).
        spec: String,
        #[arg(long, default_value = "automatic")]
        automation: String,
        /// Activate it at once.
        #[arg(long)]
        activate: bool,
    },
    /// Activate a stored strategy version.
    Activate { id: i64 },
    /// Put a host into maintenance (its VMs are live-migrated away, nothing lands on it, it
    /// never sleeps), or take it out with `--off`.
    Maintenance {
        host: u32,
        #[arg(long)]
        off: bool,
    },
    /// Show the cluster-wide operator rules, or replace them with a file's: TOML
    /// (`[operator_rules]` table or the bare fields) or JSON (docs/operator-rules.md).
    Rules { file: Option<PathBuf> },
    /// Pause the controller: no plans, nothing executed.
    Pause,
    /// Resume after a pause.
    Resume,
    /// Start an offline A/B experiment and watch it to the end.
    Ab {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        /// Traces (`embedded`, day names from the controller's trace list).
        #[arg(long = "trace", required = true)]
        traces: Vec<String>,
        /// Return at once instead of watching.
        #[arg(long)]
        no_wait: bool,
    },
    /// Watch an experiment with a progress bar until it ends.
    Watch { id: i64 },
}

struct Client {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(url: &str) -> Client {
        let token = std::env::var("AMVM_TOKEN").ok().or_else(|| std::env::var("AMVM_ADMIN_TOKEN").ok());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client { url: url.trim_end_matches('/').to_string(), token, agent }
    }

    fn call(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Value> {
        let url = format!("{}/api/v1{path}", self.url);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("PUT", body) => {
                let mut r = self.agent.put(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some((ct, bytes)) => r.header("Content-Type", ct).send(&bytes[..]),
                    None => r.send_empty(),
                }
            }
            (_, body) => {
                let mut r = self.agent.post(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some((ct, bytes)) => r.header("Content-Type", ct).send(&bytes[..]),
                    None => r.send_empty(),
                }
            }
        }
        .with_context(|| format!("cannot reach the controller at {} (is `amvm demo` running? --url)", self.url))?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().context("read the answer")?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let msg = v.get("error").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_string);
            if status == 401 && self.token.is_none() {
                bail!("{msg} (set AMVM_TOKEN to the token `amvm demo` printed)");
            }
            bail!("{status}: {msg}");
        }
        Ok(v)
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call("POST", path, Some(("application/json", body.to_string().into_bytes())))
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

pub fn run(a: CtlArgs) -> Result<ExitCode> {
    let c = Client::new(&a.url);
    let out = match &a.cmd {
        CtlCommand::Status => c.get("/status")?,
        CtlCommand::Hosts => c.get("/hosts")?,
        CtlCommand::Plans { state, limit } => {
            let q = state.as_ref().map_or_else(String::new, |s| format!("&state={s}"));
            c.get(&format!("/plans?limit={limit}{q}"))?
        }
        CtlCommand::Plan { id } => c.get(&format!("/plans/{id}"))?,
        CtlCommand::Approve { id } => c.post(&format!("/plans/{id}/approve"), Value::Null)?,
        CtlCommand::Reject { id, reason } => {
            c.post(&format!("/plans/{id}/reject"), serde_json::json!({ "reason": reason }))?
        }
        CtlCommand::Upload { file } => {
            let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
            c.call("POST", "/policies", Some(("application/wasm", bytes)))?
        }
        CtlCommand::Strategy { spec, automation, activate } => {
            let text = if spec.ends_with(".toml") {
                std::fs::read_to_string(spec).with_context(|| format!("read {spec}"))?
            } else {
                spec.clone()
            };
            c.post(
                "/strategies",
                serde_json::json!({ "strategy": text, "automation": automation, "activate": activate }),
            )?
        }
        CtlCommand::Activate { id } => c.post(&format!("/strategies/{id}/activate"), Value::Null)?,
        CtlCommand::Maintenance { host, off } => {
            c.post(&format!("/hosts/{host}/maintenance"), serde_json::json!({ "on": !off }))?
        }
        CtlCommand::Rules { file: None } => c.get("/rules")?,
        CtlCommand::Rules { file: Some(path) } => {
            let rules = read_rules(path)?;
            c.call("PUT", "/rules", Some(("application/json", serde_json::to_vec(&rules)?)))?
        }
        CtlCommand::Pause => c.post("/pause", Value::Null)?,
        CtlCommand::Resume => c.post("/resume", Value::Null)?,
        CtlCommand::Ab { a: sa, b, traces, no_wait } => {
            let e =
                c.post("/experiments", serde_json::json!({ "kind": "offline", "a": sa, "b": b, "traces": traces }))?;
            if *no_wait {
                e
            } else {
                watch(&c, e.get("id").and_then(Value::as_i64).unwrap_or(0), a.json)?
            }
        }
        CtlCommand::Watch { id } => watch(&c, *id, a.json)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_human(&a.cmd, &out);
    Ok(ExitCode::SUCCESS)
}

/// Operator rules from a TOML file (an `[operator_rules]` table, or the fields at top level) or
/// a JSON file, checked here so a mistake is reported before anything is sent.
fn read_rules(path: &std::path::Path) -> Result<crate::scheduler::OperatorRules> {
    use crate::scheduler::OperatorRules;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let rules: OperatorRules = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}: not operator rules", path.display()))?
    } else {
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}: not TOML", path.display()))?;
        let inner = match table.get("operator_rules") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => table,
        };
        inner.try_into().with_context(|| format!("{}: not operator rules", path.display()))?
    };
    rules.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(rules)
}

fn watch(c: &Client, id: i64, quiet: bool) -> Result<Value> {
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(1000) };
    if let Ok(style) = indicatif::ProgressStyle::with_template("experiment {prefix} [{bar:30}] {percent:>3}% {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(id.to_string());
    loop {
        let e = c.get(&format!("/experiments/{id}"))?;
        // Progress only moves forward.
        let p = (f(&e, "progress") * 1000.0) as u64;
        if p > bar.position() {
            bar.set_position(p);
        }
        match s(&e, "state") {
            "RUNNING" => std::thread::sleep(Duration::from_millis(500)),
            "SUCCEEDED" => {
                bar.finish_and_clear();
                return Ok(e);
            }
            other => {
                bar.finish_and_clear();
                bail!("experiment {id} {other}: {}", s(&e, "error"));
            }
        }
    }
}

fn print_human(cmd: &CtlCommand, v: &Value) {
    match cmd {
        CtlCommand::Status => {
            let m = &v["metrics"];
            println!("world     {}", s(&v["world"], "description"));
            println!(
                "strategy  {} v{} ({})",
                s(&v["strategy"], "name"),
                f(&v["strategy"], "version"),
                s(&v["strategy"], "automation")
            );
            println!(
                "hosts     {} up, {} asleep, {} down, {} in maintenance; {} VMs",
                f(m, "hosts_up"),
                f(m, "hosts_asleep"),
                f(m, "hosts_down"),
                f(m, "hosts_maintenance"),
                f(m, "vms")
            );
            println!(
                "power     {:.0} W; energy today {:.2} kWh; SLATAH {:.2} %; PDM {:.3} %",
                f(m, "power_w"),
                f(m, "energy_kwh_today"),
                100.0 * f(m, "slatah"),
                100.0 * f(m, "pdm")
            );
            println!("migrations {} in flight, {} today", f(m, "migrations_in_flight"), f(m, "migrations_today"));
            let lc = &v["last_cycle"];
            println!(
                "last cycle {}: {} migrations planned; {} actions executed, {} refused; {:.1} ms deciding{}",
                f(lc, "cycle"),
                f(lc, "migrations_planned"),
                f(lc, "executed"),
                f(lc, "refused"),
                f(lc, "decide_ms"),
                lc.get("skipped").and_then(Value::as_str).map_or_else(String::new, |s| format!(" (skipped: {s})"))
            );
            if v["guards"]["paused"].as_bool() == Some(true) {
                println!("PAUSED");
            }
        }
        CtlCommand::Hosts => {
            println!(
                "{:>6} {:<10} {:<12} {:>6} {:>6} {:>8} {:>4}",
                "id", "name", "state", "cpu%", "mem%", "power W", "vms"
            );
            for h in v.as_array().into_iter().flatten() {
                println!(
                    "{:>6} {:<10} {:<12} {:>6.1} {:>6.1} {:>8.1} {:>4}",
                    f(h, "id"),
                    s(h, "name"),
                    s(h, "state"),
                    100.0 * f(h, "cpu_util"),
                    100.0 * f(h, "mem_util"),
                    f(h, "power_w"),
                    h["vms"].as_array().map_or(0, Vec::len)
                );
            }
        }
        CtlCommand::Plans { .. } => {
            println!("{:>6} {:<12} {:<10} {:>6} {:>7}", "id", "state", "source", "cycle", "actions");
            for p in v.as_array().into_iter().flatten() {
                println!(
                    "{:>6} {:<12} {:<10} {:>6} {:>7}",
                    f(p, "id"),
                    s(p, "state"),
                    s(p, "source"),
                    f(p, "cycle"),
                    f(p, "actions")
                );
            }
        }
        CtlCommand::Upload { .. } => println!("{}", s(v, "check")),
        CtlCommand::Ab { .. } | CtlCommand::Watch { .. } => {
            for c in v["result"]["comparisons"].as_array().into_iter().flatten() {
                println!("{:<14} {}", s(c, "metric"), s(c, "verdict"));
            }
            if v["result"].is_null() {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}
