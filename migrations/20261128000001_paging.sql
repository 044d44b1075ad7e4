-- The orders list pages newest first by key (created_at, number), per role:
-- each visibility predicate has an index that yields its rows in list order.
-- (status included: the counts per status read only the index)
create index orders_buyer_recent on orders (buyer_id, created_at desc, number desc) include (status);
create index orders_factory_recent on orders (factory_id, created_at desc, number desc) include (status);
create index orders_recent on orders (created_at desc, number desc);
drop index orders_buyer_id;
drop index orders_factory_id;

-- Search by product text and PO number over the whole history: a trigram
-- index answers `ilike '%text%'` without reading every order.
create extension if not exists pg_trgm;
create index orders_search on orders using gin ((product || ' PO-' || number::text) gin_trgm_ops);

-- Inbox, sent folder and conversations page newest first by (created_at, id).
create index messages_recipient_recent on messages (recipient_id, created_at desc, id desc);
create index messages_sender_recent on messages (sender_id, created_at desc, id desc);
drop index messages_recipient;
drop index messages_sender;
