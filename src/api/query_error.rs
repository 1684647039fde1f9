//! Why an analytics query has no answer (shared by the reads and the changes). Pure.

use crate::api::endpoint::ApiError;
use crate::store::StoreError;

/// Why a query has no answer.
#[derive(Debug)]
pub enum QueryError {
    /// A parameter (or the endpoint) is invalid.
    Api(ApiError),
    /// The thing asked about does not exist.
    NotFound(&'static str),
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

impl From<ApiError> for QueryError {
    fn from(e: ApiError) -> Self {
        QueryError::Api(e)
    }
}
