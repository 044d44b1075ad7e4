pub mod login;
pub mod messages;
pub mod order_detail;
pub mod orders;
