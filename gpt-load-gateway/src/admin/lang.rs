//! The response language: English by default, Chinese for `Accept-Language: zh…`.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};

pub(crate) use crate::settings::Lang;

/// The request's language, from the first tag of `Accept-Language`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestLang(pub(crate) Lang);

impl<S: Send + Sync> FromRequestParts<S> for RequestLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(lang_of(&parts.headers)))
    }
}

/// The language asked for by the first tag of `Accept-Language`.
pub(crate) fn lang_of(headers: &HeaderMap) -> Lang {
    let first = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|tag| tag.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if first.starts_with("zh") {
        Lang::Zh
    } else {
        Lang::En
    }
}

/// A message in both languages.
pub(crate) fn text(lang: Lang, en: &'static str, zh: &'static str) -> &'static str {
    match lang {
        Lang::Zh => zh,
        _ => en,
    }
}
