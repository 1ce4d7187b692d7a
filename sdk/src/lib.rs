//! AMVM policy SDK.
