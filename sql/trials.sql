-- check_trial_eligibility reads every tenant's rows (through the indexes, without privilege checks):
-- callers need an explicit grant. Applications get the organization-scoped form (0.6.0), which
-- answers only for the organization's own customers.
REVOKE ALL ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, uuid, text) FROM PUBLIC;
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, text) IS 'The seed''s form: whether a customer may start a trial of a product: {eligible, reason, customer_id | normalized_email, matched_customer_id}.';
COMMENT ON FUNCTION checkout.check_trial_eligibility(uuid, uuid, uuid, text) IS 'Whether a customer of the organization may start a trial of a product; another organization''s customer is P0002, like a missing one.';
