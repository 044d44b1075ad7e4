pub mod badges;
pub mod connection_status;
pub mod form_feedback;
pub mod notification_bell;
pub mod optimistic;
pub mod paging;
pub mod presence;
pub mod toasts;
