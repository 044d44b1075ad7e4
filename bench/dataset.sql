-- A factory's few years of history, for benchmarks of the lists at size:
-- 100,000 orders (600,000 stages, 300,000 updates) and 200,000 messages over
-- 50 buyers and 10 factories (two staff each). One buyer, bench0@buyers.test,
-- has 20,000 orders. Passwords are the demo's ("threadline").
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f bench/dataset.sql
-- Loaded in bulk: triggers (notifications, owner copies) are off for the
-- load, so the owner copies on stages and updates are written here.
-- Run it once on a migrated database; it refuses to load twice.

\set ON_ERROR_STOP on
begin;
do $$ begin
    if exists (select 1 from users where email = 'bench0@buyers.test') then
        raise exception 'the benchmark data set is already loaded';
    end if;
end $$;
set local session_replication_role = replica;

create temporary table hash on commit drop as
select coalesce((select password_hash from users where email = 'buyer@sleek.test'),
                '$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA') as h;

insert into factories (name)
select 'Bench factory ' || f from generate_series(0, 9) as f;

insert into users (email, name, role, factory_id, password_hash)
select 'bench' || b || '@buyers.test', 'Bench buyer ' || b, 'buyer', null, (select h from hash)
from generate_series(0, 49) as b;

insert into users (email, name, role, factory_id, password_hash)
select 'staff' || f || '.' || s || '@factories.test', 'Bench staff ' || f || '.' || s, 'factory',
       (select id from factories where name = 'Bench factory ' || f), (select h from hash)
from generate_series(0, 9) as f, generate_series(0, 1) as s;

create temporary table buyers on commit drop as
select row_number() over (order by email) - 1 as n, id from users where email like 'bench%@buyers.test';
create temporary table plants on commit drop as
select row_number() over (order by name) - 1 as n, id from factories where name like 'Bench factory %';

-- order i: buyer 0 has every fifth order (20,000), the rest spread over the
-- other 49; created over three years, oldest first
insert into orders (buyer_id, factory_id, product, quantity, status, due_date, notes, created_at, updated_at)
select b.id, p.id,
       (array['Organic cotton tee', 'Merino crewneck sweater', 'Denim jacket', 'Canvas tote bag',
              'Performance running shorts', 'Linen shirt', 'Wool overcoat', 'Fleece hoodie'])[1 + i % 8]
           || ' ' || (array['navy', 'black', 'ecru', 'olive', 'rust'])[1 + i % 5] || ' batch ' || i,
       1 + (i * 37) % 5000,
       (array['pending', 'confirmed', 'in_production', 'shipped', 'delivered', 'cancelled'])[1 + i % 6],
       date '2024-01-01' + (i / 80),
       '',
       timestamptz '2023-11-01 08:00+00' + i * interval '15 minutes',
       timestamptz '2023-11-01 08:00+00' + i * interval '15 minutes'
from generate_series(0, 99999) as i
join buyers b on b.n = case when i % 5 = 0 then 0 else 1 + i % 49 end
join plants p on p.n = i % 10;

insert into production_stages (order_id, buyer_id, factory_id, stage, position)
select o.id, o.buyer_id, o.factory_id, s.stage, s.position
from orders o
join buyers b on b.id = o.buyer_id
cross join (values ('cutting', 1), ('sewing', 2), ('finishing', 3),
                   ('quality_check', 4), ('packing', 5), ('shipped', 6)) as s (stage, position);

insert into order_updates (order_id, buyer_id, factory_id, author_id, stage, text, created_at)
select o.id, o.buyer_id, o.factory_id,
       (select id from users where factory_id = o.factory_id order by email limit 1),
       (array['cutting', 'sewing', 'finishing'])[u],
       'Progress note ' || u || ' on ' || o.product,
       o.created_at + u * interval '1 day'
from orders o
join buyers b on b.id = o.buyer_id
cross join generate_series(1, 3) as u;

-- 200,000 messages between each order's buyer and its factory's first staff
-- member, both ways, two per order
insert into messages (sender_id, recipient_id, order_id, body, read_at, created_at)
select case when m = 1 then o.buyer_id else st.id end,
       case when m = 1 then st.id else o.buyer_id end,
       o.id,
       case when m = 1 then 'Any news on ' else 'Update on ' end || o.product,
       case when o.created_at < now() - interval '30 days' then o.created_at + interval '2 days' end,
       o.created_at + m * interval '3 hours'
from orders o
join buyers b on b.id = o.buyer_id
join lateral (select id from users where factory_id = o.factory_id order by email limit 1) st on true
cross join generate_series(1, 2) as m;

commit;
vacuum analyze;
