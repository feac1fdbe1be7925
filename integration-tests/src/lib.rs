//! Multi-member and fault tests (being built: see issue "integration-tests").
