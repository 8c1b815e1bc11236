\set n random(1, 1000000)
SELECT @S@.normalize_email('User.' || :n || '+Tag@GMail.com');
