//! Length-bounded strings and lists for lifting a module's `describe` result: the bound is
//! checked on the (pointer, length) pair **before** anything is copied out of the guest, so a
//! module cannot make the host allocate a 60 MB summary or a million parameters only to be
//! refused afterwards.
//!
//! These implement wasmtime's `ComponentType`/`Lift` by delegating to `String`/`Vec<T>` after
//! the length check. Those traits' methods are wasmtime's (documented, `#[doc(hidden)]`)
//! internals; wasmtime is pinned to 48 in `Cargo.toml`, and the canonical-ABI layout relied on
//! (a string or list is a `(u32 pointer, u32 length)` pair) is fixed by the component model.

use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

/// A value was longer than its bound (named by `what`).
#[derive(Debug, thiserror::Error)]
#[error("{what} is longer than {limit} {unit}")]
pub(crate) struct TooLong {
    pub what: &'static str,
    pub limit: usize,
    pub unit: &'static str,
}

/// UTF-16 strings carry this tag bit in their length (compact UTF-16 encoding).
const UTF16_TAG: u32 = 1 << 31;

fn check(len: u32, limit: usize, what: &'static str, unit: &'static str) -> wasmtime::Result<()> {
    if (len & !UTF16_TAG) as usize > limit {
        return Err(wasmtime::Error::new(TooLong { what, limit, unit }));
    }
    Ok(())
}

fn len_from_memory(bytes: &[u8]) -> wasmtime::Result<u32> {
    let len: [u8; 4] = bytes
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| wasmtime::Error::msg("string or list shorter than its canonical ABI size"))?;
    Ok(u32::from_le_bytes(len))
}

/// Names a bound for messages.
pub(crate) trait Label {
    const WHAT: &'static str;
}

/// A string of at most `N` bytes.
#[derive(Debug)]
pub(crate) struct BoundedString<const N: usize, L>(pub String, std::marker::PhantomData<L>);

// SAFETY: same representation and type check as `String`, which this delegates to.
unsafe impl<const N: usize, L: Label + Send + Sync> ComponentType for BoundedString<N, L> {
    type Lower = <String as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <String as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <String as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: delegates to `String`'s lifting after a length check.
unsafe impl<const N: usize, L: Label + Send + Sync> Lift for BoundedString<N, L> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        check(src[1].get_u32(), N, L::WHAT, "bytes")?;
        Ok(BoundedString(String::linear_lift_from_flat(cx, ty, src)?, std::marker::PhantomData))
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        check(len_from_memory(bytes)?, N, L::WHAT, "bytes")?;
        Ok(BoundedString(String::linear_lift_from_memory(cx, ty, bytes)?, std::marker::PhantomData))
    }
}

/// A list of at most `N` items.
#[derive(Debug)]
pub(crate) struct BoundedList<T, const N: usize, L>(pub Vec<T>, std::marker::PhantomData<L>);

// SAFETY: same representation and type check as `Vec<T>`, which this delegates to.
unsafe impl<T: ComponentType, const N: usize, L: Label + Send + Sync> ComponentType for BoundedList<T, N, L> {
    type Lower = <Vec<T> as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Vec<T> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Vec<T> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: delegates to `Vec<T>`'s lifting after a length check.
unsafe impl<T: Lift, const N: usize, L: Label + Send + Sync> Lift for BoundedList<T, N, L> {
    fn linear_lift_from_flat(cx: &mut LiftContext<'_>, ty: InterfaceType, src: &Self::Lower) -> wasmtime::Result<Self> {
        check(src[1].get_u32(), N, L::WHAT, "items")?;
        Ok(BoundedList(Vec::<T>::linear_lift_from_flat(cx, ty, src)?, std::marker::PhantomData))
    }

    fn linear_lift_from_memory(cx: &mut LiftContext<'_>, ty: InterfaceType, bytes: &[u8]) -> wasmtime::Result<Self> {
        check(len_from_memory(bytes)?, N, L::WHAT, "items")?;
        Ok(BoundedList(Vec::<T>::linear_lift_from_memory(cx, ty, bytes)?, std::marker::PhantomData))
    }
}
