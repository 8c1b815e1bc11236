-- The tenant and the product the demo sells, run once by the DBA (the application role has no
-- table privileges). Fixed ids, so that demo.py finds them without configuration. Safe to re-run.
INSERT INTO checkout.organizations (id, name, slug)
VALUES ('d0000000-0000-4000-8000-000000000001', 'Python Demo Inc', 'python-demo')
ON CONFLICT DO NOTHING;
INSERT INTO checkout.products (id, organization_id, name)
VALUES ('d0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-000000000001', 'Demo Pro')
ON CONFLICT DO NOTHING;
