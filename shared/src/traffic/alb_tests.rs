//! Offline tests of the ALB router with the SDK mocked.
