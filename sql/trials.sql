-- check_trial_eligibility reads every tenant's rows (through the indexes, without privilege checks):
-- callers need an explicit grant.
REVOKE ALL ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) FROM PUBLIC;
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) IS 'Whether a customer may start a trial of a product: {eligible, reason, customer_id | normalized_email, matched_customer_id}.';
