//! The dashboard's `total`: exact when the count finishes within its timeout, else an estimate,
//! squared with the page it comes with.

use super::DashboardParams;
use crate::db::companions::{self, PageFilter};
use crate::id::CategoryId;
use crate::platform::app::App;
use crate::platform::error::ApiError;

/// The exact public count when it finishes within the count timeout, else an estimate: the
/// category's count as of the last refresh, or with a search the planner's estimate of the
/// matches (never the category's count, which says nothing about the search).
pub(super) async fn total_public(app: &App, filter: &PageFilter) -> Result<(i64, bool), ApiError> {
    let mut client = app.db.get().await?;
    match companions::count_public(&mut client, filter, app.config.dashboard_count_timeout).await? {
        Some(exact) => Ok((exact, false)),
        None => {
            tracing::info!(
                category = filter.category_id.as_ref().map(CategoryId::as_str),
                search = filter.name_contains.is_some(),
                "dashboard count timed out; answering with an estimate"
            );
            let estimate = match filter.name_contains {
                None => companions::estimate_public(&client, filter).await?,
                Some(_) => companions::estimate_public_search(&client, filter).await?,
            };
            Ok((estimate, true))
        }
    }
}

/// An estimated total squared with the page itself: a page shorter than asked for is the last
/// one, so the total is exactly what came before it plus what it holds (as of the read model's
/// last refresh, like the count; an empty page past the first says nothing: the total may be
/// anywhere below its offset); a full page means at least that many. An exact count is kept as
/// it is.
pub(super) fn settle_total(
    params: &DashboardParams,
    listed: usize,
    total: i64,
    estimated: bool,
) -> (i64, bool) {
    if !estimated {
        return (total, false);
    }
    let through_page = params.offset() + listed as i64;
    if listed == 0 && params.page > 1 {
        return (total, true);
    }
    if listed < params.page_size as usize {
        (through_page, false)
    } else {
        (total.max(through_page), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_is_squared_with_the_page_it_came_with() {
        let params = |page, q: Option<&str>| DashboardParams {
            category_id: None,
            q: q.map(str::to_owned),
            page,
            page_size: 10,
        };
        // A search that found nothing on the first page has no matches at all.
        assert_eq!(
            settle_total(&params(1, Some("zzzz")), 0, 1618, true),
            (0, false)
        );
        // A short page is the last one.
        assert_eq!(
            settle_total(&params(3, Some("ada")), 4, 1618, true),
            (24, false)
        );
        // A full page: at least what it reaches, still an estimate.
        assert_eq!(
            settle_total(&params(2, Some("ada")), 10, 5, true),
            (20, true)
        );
        assert_eq!(settle_total(&params(2, None), 10, 1618, true), (1618, true));
        // An empty page past the first proves nothing.
        assert_eq!(settle_total(&params(9, None), 0, 40, true), (40, true));
        // An exact count stands.
        assert_eq!(settle_total(&params(1, None), 3, 7, false), (7, false));
    }
}
