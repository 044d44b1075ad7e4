-- Broadcast from SQL: a trigger or a job sends to a room's members (topic
-- `order:<id>` or `user:<id>`), delivered by every realtime server once the
-- calling transaction commits (nothing is sent if it rolls back). The
-- message travels in the WAL (pg_logical_emit_message), in commit order
-- with the changes around it.
create function realtime_broadcast(topic text, event text, payload jsonb default '{}'::jsonb)
returns void
language plpgsql volatile as $$
begin
    if coalesce(length(event), 0) not between 1 and 255 then
        raise exception 'realtime_broadcast: the event must be 1 to 255 characters long';
    end if;
    perform pg_logical_emit_message(
        true,
        'threadline.broadcast',
        jsonb_build_object('topic', topic, 'event', event, 'payload', payload)::text
    );
end
$$;
