//! What the API, the metrics and operators see of a node: its chain, height, view, peers and
//! readiness. A leaf: the driver fills it, the API and the metrics read it. The type is the
//! API's own (`GET /v1/status`), so what the node reports and what clients read cannot differ.

pub use medchain_api::Status;
