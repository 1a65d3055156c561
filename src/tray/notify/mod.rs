//! Desktop notifications: which engine events become alerts, and how often ([`alerts`]), and
//! showing them, with their action buttons ([`notifier`]).

pub mod alerts;
pub mod notifier;
