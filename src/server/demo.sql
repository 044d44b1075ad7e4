-- Demo data: two factories, five people (password "threadline"), and orders in
-- every status and every stage state. Orders move through the same state
-- machine as real ones, so the triggers write stages and notifications too.

insert into factories (name) values ('Dhaka Knitwear Ltd'), ('Porto Stitch Works');

insert into users (email, name, role, factory_id, password_hash)
select email, name, role, (select id from factories f where f.name = factory), current_setting('threadline.demo_hash')
from (values
    ('buyer@sleek.test', 'Ava Brooks', 'buyer', null),
    ('buyer2@sleek.test', 'Noah Kim', 'buyer', null),
    ('factory@sleek.test', 'Rahim Chowdhury', 'factory', 'Dhaka Knitwear Ltd'),
    ('factory2@sleek.test', 'Inês Costa', 'factory', 'Porto Stitch Works'),
    ('admin@sleek.test', 'Maya Patel', 'admin', null)
) as u (email, name, role, factory);

create function pg_temp.demo_order(
    p_buyer text, p_factory text, p_product text, p_quantity int, p_due_in int,
    p_target text, p_stages_done int, p_progress int
) returns uuid language plpgsql as $$
declare
    new_id uuid;
begin
    insert into orders (buyer_id, product, quantity, due_date, notes)
    values ((select id from users where email = p_buyer), p_product, p_quantity, current_date + p_due_in,
            'Demo order')
    returning id into new_id;
    if p_target = 'cancelled' then
        update orders set status = 'cancelled' where id = new_id;
        return new_id;
    end if;
    if p_target = 'pending' then
        return new_id;
    end if;
    update orders set factory_id = (select id from factories where name = p_factory), status = 'confirmed'
    where id = new_id;
    for i in 1 .. p_stages_done loop
        update production_stages set status = 'in_progress' where order_id = new_id and position = i;
        update production_stages set status = 'done' where order_id = new_id and position = i;
    end loop;
    if p_progress is not null and p_stages_done < 6 then
        update production_stages set status = 'in_progress'
        where order_id = new_id and position = p_stages_done + 1;
        update production_stages set progress = p_progress
        where order_id = new_id and position = p_stages_done + 1;
    end if;
    if p_target = 'delivered' then
        update orders set status = 'delivered' where id = new_id;
    end if;
    return new_id;
end
$$;

select pg_temp.demo_order('buyer@sleek.test', null, 'Organic cotton crew tee', 1200, 60, 'pending', 0, null);
select pg_temp.demo_order('buyer@sleek.test', 'Dhaka Knitwear Ltd', 'Linen camp shirt', 800, 45, 'confirmed', 0, null);
select pg_temp.demo_order('buyer@sleek.test', 'Dhaka Knitwear Ltd', 'Merino crewneck sweater', 500, 30, 'in_production', 1, 60);
select pg_temp.demo_order('buyer@sleek.test', 'Dhaka Knitwear Ltd', 'Selvedge denim jacket', 300, 21, 'in_production', 3, 30);
select pg_temp.demo_order('buyer@sleek.test', 'Dhaka Knitwear Ltd', 'Fleece zip hoodie', 1000, 7, 'shipped', 6, null);
select pg_temp.demo_order('buyer@sleek.test', 'Porto Stitch Works', 'Canvas tote bag', 2000, -10, 'delivered', 6, null);
select pg_temp.demo_order('buyer@sleek.test', null, 'Rain shell parka', 150, 90, 'cancelled', 0, null);
select pg_temp.demo_order('buyer2@sleek.test', 'Porto Stitch Works', 'Performance running shorts', 900, 40, 'in_production', 0, 25);
select pg_temp.demo_order('buyer2@sleek.test', null, 'Oxford button-down shirt', 400, 75, 'pending', 0, null);
select pg_temp.demo_order('buyer2@sleek.test', 'Dhaka Knitwear Ltd', 'Wool overcoat', 120, 100, 'confirmed', 0, null);

insert into order_updates (order_id, author_id, stage, text)
select o.id, (select id from users where email = 'factory@sleek.test'), u.stage, u.text
from (values
    ('Merino crewneck sweater', 'cutting', 'Cutting finished, 500 panels checked against the pattern.'),
    ('Merino crewneck sweater', 'sewing', 'Sewing line 3 is on it; about 300 pieces done.'),
    ('Selvedge denim jacket', 'finishing', 'Washing and pressing done, buttons attached.'),
    ('Selvedge denim jacket', 'quality_check', 'First QC pass: 2 pieces with loose stitching sent back.')
) as u (product, stage, text)
join orders o on o.product = u.product;

insert into order_updates (order_id, author_id, stage, text)
select o.id, (select id from users where email = 'factory2@sleek.test'), 'cutting', 'Fabric arrived, cutting started.'
from orders o where o.product = 'Performance running shorts';

insert into messages (sender_id, recipient_id, order_id, body, read_at, created_at)
select (select id from users where email = m.sender), (select id from users where email = m.recipient),
       (select id from orders where product = m.product), m.body,
       case when m.read then now() end, now() - m.age
from (values
    ('buyer@sleek.test', 'factory@sleek.test', 'Merino crewneck sweater',
     'Hi Rahim, can you confirm the sweaters ship by the due date?', true, interval '2 days'),
    ('factory@sleek.test', 'buyer@sleek.test', 'Merino crewneck sweater',
     'Yes, we are on schedule. Sewing finishes this week.', false, interval '1 day'),
    ('admin@sleek.test', 'buyer@sleek.test', null,
     'Welcome to Threadline! Your orders and messages all live here.', false, interval '3 days'),
    ('buyer2@sleek.test', 'factory2@sleek.test', 'Performance running shorts',
     'Please use the reflective trim from the approved sample.', true, interval '5 hours')
) as m (sender, recipient, product, body, read, age);

-- The history above wrote a notification for every step; a new user starts
-- with only their unread messages pending.
update notifications set read_at = now() where kind <> 'message';
