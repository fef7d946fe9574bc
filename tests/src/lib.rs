//! Test harness for switchyard's integration and end-to-end tests, and for
//! `make bench`: real local services (moto's server as the AWS emulator, an
//! HTTP endpoint whose health the test controls, other clouds' metadata
//! services, HAProxy, servers answering
//! with their version and a load generator) started on loopback and
//! stopped when dropped, the step executables run as processes, the aws CLI
//! pointed at moto, and the check of the generated files that are checked in.

pub mod autoscaling_front;
pub mod aws_cli;
pub mod cloud_metadata;
pub mod fault_proxy;
pub mod haproxy;
pub mod health_server;
pub mod http_farm;
pub mod iam;
pub mod load;
pub mod moto;
pub mod published;
pub mod route53_front;
pub mod steps;

pub use health_server::HealthServer;
pub use moto::Moto;
