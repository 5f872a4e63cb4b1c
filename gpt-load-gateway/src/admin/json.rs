//! A JSON body extractor whose rejection is the admin envelope (`400 INVALID_JSON`).

use axum::{
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;

use super::error::AdminError;

/// Like `axum::Json`, but a malformed body is `400 INVALID_JSON` in the admin envelope.
pub(crate) struct AdminJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for AdminJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(AdminError::InvalidJson(rejection.body_text()).into_response()),
        }
    }
}
