//! Hand-made hostile components, as WebAssembly text, for the defect classes the SDK cannot
//! produce (several memories, many core instances, pathological code, exports of several
//! worlds). Shared by `host/tests/sandbox.rs` and the end-to-end tests (`#[path]` include);
//! each returns text for `wat::parse_str`.
#![allow(dead_code)]

/// A minimal but well-typed placement policy: `describe` returns the descriptor `name` 0.0.1 with
/// no parameters, `configure` accepts, `weigh` returns an empty list (an invalid answer).
/// `extra` is spliced in at component level (more core modules and instances).
pub fn placement_skeleton(name: &str, extra: &str) -> String {
    assert!(name.len() < 16 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let len = name.len();
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      global.get $heap
      local.get 2
      i32.add
      i32.const 1
      i32.sub
      i32.const 0
      local.get 2
      i32.sub
      i32.and
      local.set $p
      local.get $p
      local.get 3
      i32.add
      global.set $heap
      (block $done
        (loop $grow
          global.get $heap
          memory.size
          i32.const 16
          i32.shl
          i32.le_u
          br_if $done
          i32.const 1
          memory.grow
          i32.const -1
          i32.eq
          if
            unreachable
          end
          br $grow))
      local.get $p)
    (data (i32.const 16) "{name}")
    (data (i32.const 32) "0.0.1")
    ;; descriptor return area: name (ptr, len), version (ptr, len), kind, summary, params
    (data (i32.const 64) "\10\00\00\00\{len:02x}\00\00\00\20\00\00\00\05\00\00\00\02\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00")
    (func (export "describe") (result i32) i32.const 64)
    (func (export "configure") (param i32 i32) (result i32) i32.const 128)
    (func (export "weigh") (param i32) (result i32) i32.const 160))
  (core instance $i (instantiate $m))
  {extra}
  (type $k (enum "threshold" "selection" "placement"))
  (export $policy-kind "policy-kind" (type $k))
  (type $vt (enum "float" "integer" "flag" "text"))
  (export $value-type "value-type" (type $vt))
  (type $v (variant (case "float" f64) (case "integer" s64) (case "flag" bool) (case "text" string)))
  (export $value "value" (type $v))
  (type $ps (record (field "name" string) (field "ty" $value-type) (field "default" $value)
    (field "min" (option f64)) (field "max" (option f64)) (field "help" string)))
  (export $param-spec "param-spec" (type $ps))
  (type $d (record (field "name" string) (field "version" string) (field "kind" $policy-kind)
    (field "summary" string) (field "params" (list $param-spec))))
  (export $descriptor "descriptor" (type $d))
  (type $p (record (field "name" string) (field "value" $value)))
  (export $param "param" (type $p))
  (type $c (record (field "cycle" u64) (field "interval-s" f32) (field "seed" u64)
    (field "migration-mbps" f32) (field "power-curves" (list f32))))
  (export $context "context" (type $c))
  (type $vd (record (field "cpu-mips" f32) (field "ram-mb" f32)))
  (export $vm-demand "vm-demand" (type $vd))
  (type $cs (record (field "n" u32) (field "cpu-used" (list f32)) (field "cpu-capacity" (list f32))
    (field "mem-used" (list f32)) (field "mem-capacity" (list f32)) (field "power-model" (list u32))
    (field "vm-count" (list u32)) (field "asleep" (list u8))))
  (export $candidates "candidates" (type $cs))
  (func $describe (result $descriptor)
    (canon lift (core func $i "describe") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $configure (param "params" (list $param)) (result (result (error string)))
    (canon lift (core func $i "configure") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func $weigh (param "ctx" $context) (param "vm" $vm-demand) (param "candidates" $candidates)
    (result (list (option f32)))
    (canon lift (core func $i "weigh") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "describe" (func $describe))
  (export "configure" (func $configure))
  (export "weigh" (func $weigh)))"#
    )
}

/// Class 3: `instances` core instances of a module whose memory starts at `mib` MiB. Each one is
/// under a per-memory cap; together they are far over it.
pub fn memory_sum(instances: usize, mib: usize) -> String {
    let pages = mib * 16;
    let mut extra = format!("(core module $hog (memory {pages}))\n");
    for _ in 0..instances {
        extra.push_str("  (core instance (instantiate $hog))\n");
    }
    placement_skeleton("memsum", &extra)
}

/// Class 3, tables: one 40 MiB memory plus `instances` instances of a module with a table of
/// `elements` entries; tables count toward the same cap as memories.
pub fn table_sum(instances: usize, elements: usize) -> String {
    let mut extra = format!("(core module $hog (memory 640))\n  (core instance (instantiate $hog))\n  (core module $tab (table {elements} funcref))\n");
    for _ in 0..instances {
        extra.push_str("  (core instance (instantiate $tab))\n");
    }
    placement_skeleton("tabsum", &extra)
}

/// Class 1: the functions of two worlds (threshold's `classify`, placement's `weigh`).
pub fn several_worlds() -> String {
    r#"(component
  (core module $m (func (export "f") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $f (result u32) (canon lift (core func $i "f")))
  (export "describe" (func $f))
  (export "classify" (func $f))
  (export "weigh" (func $f)))"#
        .to_string()
}

/// Class 2, a binary over the size limit: a data segment of `mib` MiB.
pub fn oversized(mib: usize) -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    // A custom section (id 0) of the given size: valid structure, nothing to compile.
    let size = (mib << 20) as u32;
    bytes.push(0);
    let mut len = size + 2;
    loop {
        let mut b = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            b |= 0x80;
        }
        bytes.push(b);
        if len == 0 {
            break;
        }
    }
    bytes.extend([1, b'x']);
    bytes.resize(bytes.len() + (mib << 20), 0);
    bytes
}

/// Class 2, a compile bomb: `n` distinct values pushed on the operand stack, then summed, so `n`
/// values are live at once for the register allocator, whose time grows with the square of it.
/// Measured on wasmtime 48 (Cranelift, debug build of the host): 10,000 values (72 KB) compile in
/// 3.9 s, 35,000 (272 KB) in 86 s.
pub fn compile_bomb(n: usize) -> String {
    let mut body = String::new();
    for k in 0..n {
        body.push_str(&format!("local.get 0 i32.const {k} i32.xor\n"));
    }
    body.push_str(&"i32.add\n".repeat(n.saturating_sub(1)));
    format!("(component (core module (func (export \"f\") (param i32) (result i32)\n{body}) ) )")
}
