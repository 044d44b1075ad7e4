-- Threadline schema. Business rules that must hold for every writer (the app,
-- psql, a migration) live here as constraints and triggers, not only in Rust.

create table factories (
    id uuid primary key default gen_random_uuid(),
    name text not null unique check (length(btrim(name)) between 1 and 200),
    created_at timestamptz not null default now()
);

create table users (
    id uuid primary key default gen_random_uuid(),
    email text not null unique check (email = lower(btrim(email)) and email like '_%@_%'),
    name text not null check (length(btrim(name)) between 1 and 200),
    role text not null check (role in ('buyer', 'factory', 'admin')),
    factory_id uuid references factories (id),
    password_hash text not null,
    created_at timestamptz not null default now(),
    constraint factory_staff_have_a_factory check ((role = 'factory') = (factory_id is not null))
);

create table sessions (
    token_hash bytea primary key,
    user_id uuid not null references users (id) on delete cascade,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);
create index sessions_user_id on sessions (user_id);

create table login_failures (
    email text not null,
    failed_at timestamptz not null default now()
);
create index login_failures_email_at on login_failures (email, failed_at);

create table orders (
    id uuid primary key default gen_random_uuid(),
    number bigint generated always as identity unique,
    buyer_id uuid not null references users (id),
    factory_id uuid references factories (id),
    product text not null check (length(btrim(product)) between 1 and 200),
    quantity integer not null check (quantity between 1 and 1000000),
    status text not null default 'pending'
        check (status in ('pending', 'confirmed', 'in_production', 'shipped', 'delivered', 'cancelled')),
    due_date date not null,
    notes text not null default '' check (length(notes) <= 2000),
    client_mutation_id uuid,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint work_needs_a_factory check (status in ('pending', 'cancelled') or factory_id is not null)
);
create index orders_buyer_id on orders (buyer_id);
create index orders_factory_id on orders (factory_id);

-- The order state machine. Every status change, by any writer, must be one of these edges.
create function order_status_allowed(old_status text, new_status text) returns boolean
language sql immutable as $$
    select (old_status, new_status) in (
        ('pending', 'confirmed'),
        ('pending', 'cancelled'),
        ('confirmed', 'in_production'),
        ('confirmed', 'cancelled'),
        ('in_production', 'shipped'),
        ('shipped', 'delivered')
    )
$$;

create function orders_before_update() returns trigger
language plpgsql as $$
begin
    if new.status is distinct from old.status
       and not order_status_allowed(old.status, new.status) then
        raise exception 'invalid status change from % to %', old.status, new.status
            using errcode = 'check_violation', constraint = 'order_status_transition';
    end if;
    if new.factory_id is distinct from old.factory_id and old.status not in ('pending', 'confirmed') then
        raise exception 'an order in status % cannot change factory', old.status
            using errcode = 'check_violation', constraint = 'order_factory_locked';
    end if;
    new.updated_at := now();
    return new;
end
$$;
create trigger orders_before_update before update on orders
    for each row execute function orders_before_update();

create table production_stages (
    id uuid primary key default gen_random_uuid(),
    order_id uuid not null references orders (id) on delete cascade,
    -- Copies of the order's owners, kept in sync by triggers, so that every row
    -- carries what realtime authorization needs.
    buyer_id uuid not null references users (id),
    factory_id uuid references factories (id),
    stage text not null
        check (stage in ('cutting', 'sewing', 'finishing', 'quality_check', 'packing', 'shipped')),
    position smallint not null check (position between 1 and 6),
    status text not null default 'pending' check (status in ('pending', 'in_progress', 'done')),
    progress smallint not null default 0 check (progress between 0 and 100),
    started_at timestamptz,
    completed_at timestamptz,
    client_mutation_id uuid,
    updated_at timestamptz not null default now(),
    unique (order_id, stage),
    unique (order_id, position),
    constraint stage_timestamps check (
        (status = 'pending' and started_at is null and completed_at is null and progress = 0)
        or (status = 'in_progress' and started_at is not null and completed_at is null)
        or (status = 'done' and started_at is not null and completed_at is not null and progress = 100)
    )
);

create table order_updates (
    id uuid primary key default gen_random_uuid(),
    order_id uuid not null references orders (id) on delete cascade,
    buyer_id uuid not null references users (id),
    factory_id uuid references factories (id),
    author_id uuid not null references users (id),
    stage text check (stage in ('cutting', 'sewing', 'finishing', 'quality_check', 'packing', 'shipped')),
    text text not null check (length(btrim(text)) between 1 and 5000),
    client_mutation_id uuid,
    created_at timestamptz not null default now()
);
create index order_updates_order_id on order_updates (order_id, created_at);

create table messages (
    id uuid primary key default gen_random_uuid(),
    sender_id uuid not null references users (id),
    recipient_id uuid not null references users (id),
    order_id uuid references orders (id) on delete set null,
    body text not null check (length(btrim(body)) between 1 and 5000),
    read_at timestamptz,
    client_mutation_id uuid,
    created_at timestamptz not null default now(),
    constraint not_to_self check (sender_id <> recipient_id)
);
create index messages_recipient on messages (recipient_id, created_at);
create index messages_sender on messages (sender_id, created_at);
create index messages_order on messages (order_id, created_at);

create table notifications (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references users (id) on delete cascade,
    kind text not null check (kind in ('message', 'order_status', 'order_assigned', 'production_update', 'stage')),
    text text not null,
    link text not null default '',
    read_at timestamptz,
    created_at timestamptz not null default now()
);
create index notifications_user on notifications (user_id, created_at);

-- New orders get their six production stages, and their children follow the order's owners.
create function orders_after_insert() returns trigger
language plpgsql as $$
begin
    insert into production_stages (order_id, buyer_id, factory_id, stage, position)
    select new.id, new.buyer_id, new.factory_id, s.stage, s.position
    from (values ('cutting', 1), ('sewing', 2), ('finishing', 3),
                 ('quality_check', 4), ('packing', 5), ('shipped', 6)) as s (stage, position);
    return null;
end
$$;
create trigger orders_after_insert after insert on orders
    for each row execute function orders_after_insert();

create function order_label(o orders) returns text
language sql stable as $$ select 'PO-' || o.number || ' (' || o.product || ')' $$;

create function orders_after_update() returns trigger
language plpgsql as $$
begin
    if new.factory_id is distinct from old.factory_id then
        update production_stages set factory_id = new.factory_id where order_id = new.id;
        update order_updates set factory_id = new.factory_id where order_id = new.id;
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
create trigger orders_after_update after update on orders
    for each row execute function orders_after_update();

-- Stages move pending -> in_progress -> done, one after another, only while the
-- order is in work; the first start and the final shipment move the order itself.
create function production_stages_before_update() returns trigger
language plpgsql as $$
declare
    order_status text;
    previous_status text;
begin
    if (new.order_id, new.stage, new.position) is distinct from (old.order_id, old.stage, old.position) then
        raise exception 'a production stage cannot move to another order or position'
            using errcode = 'check_violation', constraint = 'stage_identity';
    end if;
    if new.status = old.status and new.progress = old.progress then
        return new;
    end if;
    select status into order_status from orders where id = old.order_id;
    if order_status not in ('confirmed', 'in_production') then
        raise exception 'production cannot change while the order is %', replace(order_status, '_', ' ')
            using errcode = 'check_violation', constraint = 'stage_order_not_in_work';
    end if;
    if new.status <> old.status then
        if not ((old.status, new.status) in (('pending', 'in_progress'), ('in_progress', 'done'))) then
            raise exception 'stage % cannot go from % to %', old.stage, old.status, new.status
                using errcode = 'check_violation', constraint = 'stage_transition';
        end if;
        if new.status = 'in_progress' then
            select status into previous_status from production_stages
            where order_id = old.order_id and position = old.position - 1;
            if previous_status is not null and previous_status <> 'done' then
                raise exception 'stage % cannot start before the previous stage is done', old.stage
                    using errcode = 'check_violation', constraint = 'stage_order';
            end if;
            new.started_at := coalesce(new.started_at, now());
        else
            new.progress := 100;
            new.completed_at := coalesce(new.completed_at, now());
        end if;
    elsif old.status <> 'in_progress' then
        raise exception 'progress can only change while stage % is in progress', old.stage
            using errcode = 'check_violation', constraint = 'stage_progress';
    end if;
    new.updated_at := now();
    return new;
end
$$;
create trigger production_stages_before_update before update on production_stages
    for each row execute function production_stages_before_update();

create function production_stages_after_update() returns trigger
language plpgsql as $$
begin
    if new.status = 'in_progress' and old.status = 'pending' then
        update orders set status = 'in_production' where id = new.order_id and status = 'confirmed';
    end if;
    if new.status = 'done' and old.status <> 'done' and new.stage = 'shipped' then
        update orders set status = 'shipped' where id = new.order_id and status = 'in_production';
    end if;
    if new.status <> old.status then
        insert into notifications (user_id, kind, text, link)
        select o.buyer_id, 'stage',
               'Order ' || order_label(o) || ': ' || replace(new.stage, '_', ' ') || ' ' ||
               case new.status when 'done' then 'completed' else 'started' end,
               '/orders/' || o.id
        from orders o where o.id = new.order_id;
    end if;
    return null;
end
$$;
create trigger production_stages_after_update after update on production_stages
    for each row execute function production_stages_after_update();

create function order_updates_before_insert() returns trigger
language plpgsql as $$
begin
    select buyer_id, factory_id into new.buyer_id, new.factory_id from orders where id = new.order_id;
    return new;
end
$$;
create trigger order_updates_before_insert before insert on order_updates
    for each row execute function order_updates_before_insert();

create function order_updates_after_insert() returns trigger
language plpgsql as $$
begin
    insert into notifications (user_id, kind, text, link)
    select u.id, 'production_update', 'Update on ' || order_label(o) || ': ' || left(new.text, 120),
           '/orders/' || o.id
    from orders o join users u on u.id = o.buyer_id or (u.factory_id is not null and u.factory_id = o.factory_id)
    where o.id = new.order_id and u.id <> new.author_id;
    return null;
end
$$;
create trigger order_updates_after_insert after insert on order_updates
    for each row execute function order_updates_after_insert();

create function messages_after_insert() returns trigger
language plpgsql as $$
begin
    insert into notifications (user_id, kind, text, link)
    select new.recipient_id, 'message', 'New message from ' || s.name || ': ' || left(new.body, 120),
           case when new.order_id is null then '/messages' else '/orders/' || new.order_id end
    from users s where s.id = new.sender_id;
    return null;
end
$$;
create trigger messages_after_insert after insert on messages
    for each row execute function messages_after_insert();

-- Realtime: every published table logs its whole old row, so UPDATE and DELETE
-- events can be filtered and authorized like inserts.
alter table orders replica identity full;
alter table production_stages replica identity full;
alter table order_updates replica identity full;
alter table messages replica identity full;
alter table notifications replica identity full;

create publication threadline_realtime
    for table orders, production_stages, order_updates, messages, notifications;

-- Server secrets shared by every app server on this database (token signing key).
create table app_secrets (
    name text primary key,
    value bytea not null,
    created_at timestamptz not null default now()
);
