//! The state machine against a reference model written from the spec tables.
