//! Structural limits, checked on the binary before it is compiled.
//!
//! Compiling is the one step that runs before any sandbox limit applies: Cranelift's time and
//! memory grow with the size and shape of the code (functions, body sizes, locals, control
//! blocks), and a small crafted binary can keep it busy for minutes. [`check_structure`] walks
//! the component and every core module nested in it with `wasmparser` (no compilation, linear
//! in the bytes) and refuses anything past [`CompileLimits`], so the compiler only ever sees
//! code whose cost is bounded. The limits sit one to two orders of magnitude above what the
//! built-in policies need (see the test at the bottom).
//!
//! What is instantiated at run time (memories, tables, instances) is limited again, exactly,
//! by the store's `ResourceLimiter` (`instance.rs`): a component can instantiate one core
//! module many times, which a static count cannot see.

use wasmparser::{FuncToValidate, Operator, Parser, Payload, ValidPayload, Validator, ValidatorResources};

use super::PolicyError;

/// Bounds on the structure of a module, checked before compiling.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// Largest binary (bytes).
    pub max_bytes: usize,
    /// Core modules and components nested in the component.
    pub max_modules: usize,
    /// Core and component instances it declares.
    pub max_instances: usize,
    /// Functions defined across all core modules.
    pub max_functions: usize,
    /// Code bytes across all core modules.
    pub max_code_bytes: usize,
    /// Largest function body (bytes).
    pub max_body_bytes: usize,
    /// Most locals in one function.
    pub max_locals: u64,
    /// Most control blocks (`block`, `loop`, `if`, `try_table`) in one function.
    pub max_blocks: u64,
    /// Locals × control blocks in one function: what SSA construction costs in the worst case.
    pub max_locals_x_blocks: u64,
    /// Most `br_table` targets in one function.
    pub max_br_table_targets: u64,
    /// Highest operand stack in one function (values live at once for the register
    /// allocator, whose cost grows with the square of it).
    pub max_operand_stack: u64,
    /// Compile cost score of all functions together: Σ body bytes × (1 + operand stack height +
    /// locals / 16). Measured (debug build of the host): a 72 KB function 10,000 values deep
    /// scores 7.2e8 and takes Cranelift 3.9 s; 35,000 deep (272 KB) takes 86 s.
    pub max_compile_cost: u64,
    /// Memories defined across all core modules.
    pub max_memories: usize,
    /// Tables defined across all core modules.
    pub max_tables: usize,
    /// Initial size of all memories together (bytes); `None`: the runtime's memory cap.
    pub max_initial_memory_bytes: Option<u64>,
    /// Initial elements of all tables together.
    pub max_initial_table_elements: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_bytes: 16 << 20,
            max_modules: 32,
            max_instances: 64,
            max_functions: 50_000,
            max_code_bytes: 12 << 20,
            max_body_bytes: 512 << 10,
            max_locals: 10_000,
            max_blocks: 20_000,
            max_locals_x_blocks: 20_000_000,
            max_br_table_targets: 20_000,
            max_operand_stack: 4_096,
            max_compile_cost: 400_000_000,
            max_memories: 8,
            max_tables: 16,
            max_initial_memory_bytes: None,
            max_initial_table_elements: 200_000,
        }
    }
}

/// What [`check_structure`] counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Structure {
    pub modules: usize,
    pub instances: usize,
    pub functions: usize,
    pub code_bytes: usize,
    pub max_body_bytes: usize,
    pub max_locals: u64,
    pub max_blocks: u64,
    pub max_locals_x_blocks: u64,
    pub max_br_table_targets: u64,
    pub max_operand_stack: u64,
    pub compile_cost: u64,
    pub memories: usize,
    pub tables: usize,
    pub initial_memory_bytes: u64,
    pub initial_table_elements: u64,
}

fn too(what: &str, got: impl std::fmt::Display, limit: impl std::fmt::Display) -> PolicyError {
    PolicyError::TooComplex(format!("{what} {got} exceeds the limit of {limit}"))
}

fn invalid(e: wasmparser::BinaryReaderError) -> PolicyError {
    PolicyError::Invalid(e.to_string())
}

/// Walks `bytes` (a component) and checks it against `limits`; `memory_cap` is the runtime's
/// memory limit, the default bound on initial memory.
pub fn check_structure(bytes: &[u8], limits: &CompileLimits, memory_cap: u64) -> Result<Structure, PolicyError> {
    if bytes.len() > limits.max_bytes {
        return Err(too("module size (bytes)", bytes.len(), limits.max_bytes));
    }
    let memory_limit = limits.max_initial_memory_bytes.unwrap_or(memory_cap);
    let mut s = Structure::default();
    let mut validator = Validator::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        let func = match validator.payload(&payload).map_err(invalid)? {
            ValidPayload::Func(func, _) => Some(func),
            _ => None,
        };
        match payload {
            Payload::Version { .. } => {
                // Counts the outer component too; subtracted at the end.
                s.modules += 1;
                if s.modules > limits.max_modules + 1 {
                    return Err(too("nested modules", s.modules - 1, limits.max_modules));
                }
            }
            Payload::InstanceSection(r) => {
                s.instances += r.count() as usize;
            }
            Payload::ComponentInstanceSection(r) => {
                s.instances += r.count() as usize;
            }
            Payload::FunctionSection(r) => {
                s.functions += r.count() as usize;
                if s.functions > limits.max_functions {
                    return Err(too("functions", s.functions, limits.max_functions));
                }
            }
            Payload::MemorySection(r) => {
                for m in r {
                    let m = m.map_err(invalid)?;
                    s.memories += 1;
                    let page = 1u64 << m.page_size_log2.unwrap_or(16);
                    s.initial_memory_bytes = s.initial_memory_bytes.saturating_add(m.initial.saturating_mul(page));
                }
                if s.memories > limits.max_memories {
                    return Err(too("memories", s.memories, limits.max_memories));
                }
                if s.initial_memory_bytes > memory_limit {
                    return Err(too(
                        "initial memory (MiB, all memories together)",
                        s.initial_memory_bytes >> 20,
                        memory_limit >> 20,
                    ));
                }
            }
            Payload::TableSection(r) => {
                for t in r {
                    let t = t.map_err(invalid)?;
                    s.tables += 1;
                    s.initial_table_elements = s.initial_table_elements.saturating_add(t.ty.initial);
                }
                if s.tables > limits.max_tables {
                    return Err(too("tables", s.tables, limits.max_tables));
                }
                if s.initial_table_elements > limits.max_initial_table_elements {
                    return Err(too(
                        "initial table elements",
                        s.initial_table_elements,
                        limits.max_initial_table_elements,
                    ));
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                s.code_bytes += size as usize;
                if s.code_bytes > limits.max_code_bytes {
                    return Err(too("code size (bytes)", s.code_bytes, limits.max_code_bytes));
                }
            }
            Payload::CodeSectionEntry(body) => match func {
                Some(func) => function(&body, func, limits, &mut s)?,
                None => return Err(PolicyError::Invalid("function body without a validator".into())),
            },
            _ => {}
        }
        if s.instances > limits.max_instances {
            return Err(too("instances", s.instances, limits.max_instances));
        }
    }
    s.modules = s.modules.saturating_sub(1);
    Ok(s)
}

/// Checks one function while validating it (the validator knows the operand stack height).
fn function(
    body: &wasmparser::FunctionBody<'_>,
    func: FuncToValidate<ValidatorResources>,
    limits: &CompileLimits,
    s: &mut Structure,
) -> Result<(), PolicyError> {
    let size = body.range().len();
    s.max_body_bytes = s.max_body_bytes.max(size);
    if size > limits.max_body_bytes {
        return Err(too("function body (bytes)", size, limits.max_body_bytes));
    }
    let mut fv = func.into_validator(Default::default());
    let mut locals = 0u64;
    let mut reader = body.get_locals_reader().map_err(invalid)?;
    for _ in 0..reader.get_count() {
        let offset = reader.original_position();
        let (count, ty) = reader.read().map_err(invalid)?;
        locals = locals.saturating_add(u64::from(count));
        if locals > limits.max_locals {
            return Err(too("locals in one function", locals, limits.max_locals));
        }
        fv.define_locals(offset, count, ty).map_err(invalid)?;
    }
    s.max_locals = s.max_locals.max(locals);
    let mut blocks = 0u64;
    let mut targets = 0u64;
    let mut height = 0u64;
    let mut ops = body.get_operators_reader().map_err(invalid)?;
    while !ops.eof() {
        let offset = ops.original_position();
        let op = ops.read().map_err(invalid)?;
        fv.op(offset, &op).map_err(invalid)?;
        height = height.max(u64::from(fv.operand_stack_height()));
        if height > limits.max_operand_stack {
            return Err(too("operand stack height in one function", height, limits.max_operand_stack));
        }
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } | Operator::TryTable { .. } => {
                blocks += 1;
                if blocks > limits.max_blocks {
                    return Err(too("control blocks in one function", blocks, limits.max_blocks));
                }
            }
            Operator::BrTable { targets: t } => {
                targets += u64::from(t.len());
                if targets > limits.max_br_table_targets {
                    return Err(too("br_table targets in one function", targets, limits.max_br_table_targets));
                }
            }
            _ => {}
        }
    }
    ops.finish().map_err(invalid)?;
    let product = locals.saturating_mul(blocks.max(1));
    if product > limits.max_locals_x_blocks {
        return Err(too("locals × control blocks in one function", product, limits.max_locals_x_blocks));
    }
    s.compile_cost = s.compile_cost.saturating_add((size as u64).saturating_mul(1 + height + locals / 16));
    if s.compile_cost > limits.max_compile_cost {
        return Err(too(
            "compile cost (Σ body bytes × (1 + stack height + locals/16))",
            s.compile_cost,
            limits.max_compile_cost,
        ));
    }
    s.max_blocks = s.max_blocks.max(blocks);
    s.max_br_table_targets = s.max_br_table_targets.max(targets);
    s.max_locals_x_blocks = s.max_locals_x_blocks.max(product);
    s.max_operand_stack = s.max_operand_stack.max(height);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wat: &str) -> Result<Structure, PolicyError> {
        check_structure(&wat::parse_str(wat).unwrap(), &CompileLimits::default(), 64 << 20)
    }

    /// The built-ins must pass with a wide margin; the limits are meant for hostile modules.
    #[test]
    fn builtins_are_far_below_the_limits() {
        let l = CompileLimits::default();
        for (name, bytes) in super::super::builtin::BUILTINS {
            let s = check_structure(bytes, &l, 64 << 20).unwrap();
            eprintln!("{name}: {s:?}");
            assert!(s.functions * 10 < l.max_functions, "{name}: {s:?}");
            assert!(s.max_body_bytes * 4 < l.max_body_bytes, "{name}: {s:?}");
            assert!(s.max_locals * 10 < l.max_locals, "{name}: {s:?}");
            assert!(s.max_locals_x_blocks * 10 < l.max_locals_x_blocks, "{name}: {s:?}");
            assert!(s.instances * 3 <= l.max_instances, "{name}: {s:?}");
            assert!(s.memories * 4 <= l.max_memories, "{name}: {s:?}");
            assert!(s.compile_cost * 50 < l.max_compile_cost, "{name}: {s:?}");
            assert!(s.max_operand_stack * 50 < l.max_operand_stack, "{name}: {s:?}");
        }
    }

    #[test]
    fn refusals_name_the_limit() {
        let many_locals = format!("(component (core module (func (local {}))))", "i32 ".repeat(20_000));
        let e = check(&many_locals).unwrap_err();
        assert!(e.to_string().contains("locals in one function 20000"), "{e}");
        let memories: String = (0..9).map(|i| format!("(core module $m{i} (memory 1))")).collect::<Vec<_>>().join(" ");
        let e = check(&format!("(component {memories})")).unwrap_err();
        assert!(e.to_string().contains("memories 9"), "{e}");
        let e = check("(component (core module (memory 1025)))").unwrap_err();
        assert!(e.to_string().contains("initial memory"), "{e}");
        let blocks = format!("(component (core module (func {})))", "(block)".repeat(20_001));
        let e = check(&blocks).unwrap_err();
        assert!(e.to_string().contains("control blocks"), "{e}");
        assert!(matches!(
            check_structure(b"\0asm\x0d\0\x01\0\xff", &CompileLimits::default(), 1 << 20),
            Err(PolicyError::Invalid(_))
        ));
        // Values live at once: quadratic for the register allocator.
        let wide = format!(
            "(component (core module (func (param i32) (result i32) {} {})))",
            (0..5000).map(|k| format!("local.get 0 i32.const {k} i32.xor")).collect::<Vec<_>>().join(" "),
            "i32.add ".repeat(4999)
        );
        let e = check(&wide).unwrap_err();
        assert!(e.to_string().contains("operand stack height in one function 4097"), "{e}");
        let ok = check(&format!("(component (core module (func (local {}) (block))))", "i32 ".repeat(10))).unwrap();
        assert_eq!((ok.modules, ok.functions, ok.max_locals, ok.max_blocks), (1, 1, 10, 1));
    }
}
