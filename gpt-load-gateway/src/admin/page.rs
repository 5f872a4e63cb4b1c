//! gpt-load's pagination: `page` (default 1), `page_size` (default 15, at most 1000) →
//! `{"items": […], "pagination": {"page", "page_size", "total_items", "total_pages"}}`, and
//! `"total_capped": true` where a listing stopped counting (the request logs).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::repo::count::BoundedCount;

/// The `page` and `page_size` query parameters.
#[derive(Clone, Copy, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// From 1 (default 1).
    pub(crate) page: Option<i64>,
    /// 1–1000 (default 15).
    pub(crate) page_size: Option<i64>,
}

impl PageQuery {
    /// The page, at least 1.
    pub(crate) fn page(&self) -> i64 {
        self.page.filter(|p| *p >= 1).unwrap_or(1)
    }

    /// The page size: 15 when absent or not positive, at most 1000.
    pub(crate) fn page_size(&self) -> i64 {
        self.page_size.filter(|s| *s > 0).unwrap_or(15).min(1000)
    }

    /// Rows to skip.
    pub(crate) fn offset(&self) -> i64 {
        (self.page() - 1) * self.page_size()
    }
}

/// The pagination object.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, ToSchema)]
pub(crate) struct Pagination {
    pub(crate) page: i64,
    pub(crate) page_size: i64,
    pub(crate) total_items: i64,
    pub(crate) total_pages: i64,
    /// Present and `true` when counting stopped early: more than `total_items` items match.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub(crate) total_capped: bool,
}

/// One page of items.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) pagination: Pagination,
}

impl<T> Page<T> {
    pub(crate) fn new(items: Vec<T>, query: PageQuery, total_items: i64) -> Self {
        Self::counted(
            items,
            query,
            BoundedCount {
                total: total_items,
                capped: false,
            },
        )
    }

    /// A page whose total may have been counted only up to a cap.
    pub(crate) fn counted(items: Vec<T>, query: PageQuery, count: BoundedCount) -> Self {
        let BoundedCount {
            total: total_items,
            capped: total_capped,
        } = count;
        let page_size = query.page_size();
        let total_pages = (total_items + page_size - 1) / page_size;
        Self {
            items,
            pagination: Pagination {
                page: query.page(),
                page_size,
                total_items,
                total_pages,
                total_capped,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let q = PageQuery {
            page: Some(0),
            page_size: Some(5000),
        };
        assert_eq!((q.page(), q.page_size(), q.offset()), (1, 1000, 0));
        let q = PageQuery {
            page: Some(3),
            page_size: Some(-1),
        };
        assert_eq!((q.page(), q.page_size(), q.offset()), (3, 15, 30));
        let page = Page::new(vec![1, 2], PageQuery::default(), 31);
        assert_eq!(
            page.pagination,
            Pagination {
                page: 1,
                page_size: 15,
                total_items: 31,
                total_pages: 3,
                total_capped: false,
            }
        );
        assert_eq!(
            Page::<u8>::new(vec![], PageQuery::default(), 0)
                .pagination
                .total_pages,
            0
        );
    }

    #[test]
    fn a_capped_count_says_so_and_an_exact_one_keeps_gpt_loads_shape() {
        let exact = serde_json::to_value(Page::<u8>::new(vec![], PageQuery::default(), 4)).unwrap();
        assert_eq!(
            exact["pagination"],
            serde_json::json!({"page": 1, "page_size": 15, "total_items": 4, "total_pages": 1})
        );
        let capped = Page::<u8>::counted(
            vec![],
            PageQuery::default(),
            BoundedCount {
                total: 10_015,
                capped: true,
            },
        );
        assert_eq!(
            serde_json::to_value(capped).unwrap()["pagination"],
            serde_json::json!({"page": 1, "page_size": 15, "total_items": 10_015,
                "total_pages": 668, "total_capped": true})
        );
    }
}
