//! OpenStack: AMVM as the consolidation engine of a Nova cloud (issue #14).
//!
//! - [`keystone`]: a cloud from `clouds.yaml`, Keystone v3 tokens (password or application
//!   credential) and the service catalog.
//! - [`nova`]: the compute API calls consolidation needs, with microversion negotiation and
//!   retries with back-off on transient errors.
//! - [`world`]: the controller's [`World`](crate::controller::world::World) on a Nova cloud.

pub mod keystone;
pub mod nova;
pub mod world;

pub use keystone::Cloud;
pub use nova::{Nova, NovaError};
pub use world::{AgentFeed, OpenStackWorld, OpenStackWorldConfig};
