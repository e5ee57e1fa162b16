//! Shared support for browser end-to-end tests.
