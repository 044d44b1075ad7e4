-- Where each realtime server's stream stood when it last stopped cleanly, so
-- that after a restart clients resuming from that point get exactly what
-- they missed instead of a reset.
create table realtime_state (
    slot_name text primary key,
    head_cursor text not null,
    stopped_at timestamptz not null default now()
);
