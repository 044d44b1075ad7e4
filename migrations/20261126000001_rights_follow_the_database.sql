-- Rights follow the database, for every writer.
--
-- 1. Stages and production updates carry copies of their order's owners
--    (buyer_id, factory_id) so that each row says who may see it. The copies
--    are set from the order by a trigger on every insert and update of a
--    child, and rewritten by the order's own update when its buyer or factory
--    changes, in the same transaction: a change of owners reaches the change
--    stream together with its children's.
--
--    Under concurrent writers: the child trigger reads the order FOR SHARE,
--    which conflicts with the lock an UPDATE of the order takes. A child
--    written first makes the order's update wait for its commit, and the
--    update's trigger (a fresh snapshot per statement under READ COMMITTED)
--    then sees and rewrites it; a child written second waits for the
--    order's update and reads its new owners. SERIALIZABLE writers are kept
--    apart by serializable snapshot isolation. A REPEATABLE READ transaction
--    could not see a child committed after it began, so it may not change an
--    order's owners (a clear error instead of a stale copy).

create function order_children_follow_owners() returns trigger
language plpgsql as $$
begin
    select o.buyer_id, o.factory_id into new.buyer_id, new.factory_id
    from orders o where o.id = new.order_id for share;
    return new;
end
$$;

drop trigger order_updates_before_insert on order_updates;
drop function order_updates_before_insert();

create trigger production_stages_owners before insert or update on production_stages
    for each row execute function order_children_follow_owners();
create trigger order_updates_owners before insert or update on order_updates
    for each row execute function order_children_follow_owners();

create or replace function orders_after_update() returns trigger
language plpgsql as $$
begin
    if (new.buyer_id, new.factory_id) is distinct from (old.buyer_id, old.factory_id) then
        if current_setting('transaction_isolation') = 'repeatable read' then
            raise exception 'an order''s buyer or factory can only change under READ COMMITTED or SERIALIZABLE isolation'
                using errcode = 'check_violation', constraint = 'order_owners_isolation';
        end if;
        update production_stages set buyer_id = new.buyer_id, factory_id = new.factory_id
        where order_id = new.id;
        update order_updates set buyer_id = new.buyer_id, factory_id = new.factory_id
        where order_id = new.id;
    end if;
    if new.factory_id is distinct from old.factory_id then
        insert into notifications (user_id, kind, text, link)
        select u.id, 'order_assigned', 'Order ' || order_label(new) || ' was assigned to your factory',
               '/orders/' || new.id
        from users u where u.factory_id = new.factory_id;
    end if;
    if new.status is distinct from old.status then
        insert into notifications (user_id, kind, text, link)
        select u.id, 'order_status',
               'Order ' || order_label(new) || ' is now ' || replace(new.status, '_', ' '),
               '/orders/' || new.id
        from users u
        where u.id = new.buyer_id or (u.factory_id is not null and u.factory_id = new.factory_id);
    end if;
    return null;
end
$$;

-- Copies written before this migration follow their orders now.
update production_stages s set buyer_id = o.buyer_id, factory_id = o.factory_id
from orders o where o.id = s.order_id
  and (s.buyer_id, s.factory_id) is distinct from (o.buyer_id, o.factory_id);
update order_updates u set buyer_id = o.buyer_id, factory_id = o.factory_id
from orders o where o.id = u.order_id
  and (u.buyer_id, u.factory_id) is distinct from (o.buyer_id, o.factory_id);

-- 2. Who someone is, and whether their session still counts, reaches the
--    realtime engine in the same stream as the rows, in commit order: from
--    the commit that signs someone out, removes them or changes their role
--    or factory, no later change reaches their connections under the old
--    rights. Only the columns rights depend on are streamed (never a
--    password hash), and no subscriber may listen to these tables.
alter publication threadline_realtime
    add table users (id, role, factory_id), sessions (token_hash, user_id, expires_at);

-- 3. Sign-in attempts are reserved before the password is checked (and
--    kept as failures unless it matches), so concurrent guesses count.
alter table login_failures add column id bigint generated always as identity primary key;

-- 4. Clients resume across restarts and crashes from the WAL itself (each
--    server's log slot keeps its retention window): the position a clean
--    stop used to record is no longer needed.
drop table realtime_state;
