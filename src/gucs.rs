//! Every setting (GUC) of checkout, registered when the library loads.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `checkout.idempotency_key_ttl`: seconds after its creation during which an idempotency key is
/// honoured; older keys count as absent (and maintenance may delete them).
pub static IDEMPOTENCY_KEY_TTL: GucSetting<i32> = GucSetting::<i32>::new(24 * 60 * 60);

pub fn init() {
    GucRegistry::define_int_guc(
        c"checkout.idempotency_key_ttl",
        c"How long an idempotency key is honoured after its first use.",
        c"Older keys count as absent: a call with one does the work again. Accepts units, e.g. '24h'.",
        &IDEMPOTENCY_KEY_TTL,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
}
