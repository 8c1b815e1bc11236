\set c random(1, :N)
\set k random(0, 1)
SELECT @S@.check_trial_eligibility(bench_uuid(4, :c), bench_uuid(2, bench_product(:c, :k)), 'User' || :c || '@Example.com');
