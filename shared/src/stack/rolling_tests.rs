//! Offline tests of the rolling strategy with the SDK mocked.
