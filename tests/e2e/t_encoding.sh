# checkout reads text arguments as UTF-8: CREATE EXTENSION in a database of another encoding is
# refused with 0A000 and leaves nothing behind; a UTF8 database takes non-ASCII emails.
source "$(dirname "$0")/lib.sh"
for enc in LATIN1 SQL_ASCII; do
  db="e2e_enc_$(echo "$enc" | tr 'A-Z' 'a-z')"
  psql_db postgres -c "DROP DATABASE IF EXISTS $db" \
    -c "CREATE DATABASE $db ENCODING '$enc' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
  out=$(psql_db "$db" -v VERBOSITY=sqlstate -c "CREATE EXTENSION checkout" 2>&1) && fail "$enc: CREATE EXTENSION succeeded"
  assert_eq "ERROR:  0A000" "$out" "$enc: CREATE EXTENSION"
  assert_eq 0 "$(psql_db "$db" -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'checkout'")" "$enc: schemas left behind"
  psql_db postgres -c "DROP DATABASE $db"
done
fresh_db e2e_enc_utf8
psql_db e2e_enc_utf8 -c "CREATE EXTENSION checkout"
assert_eq "äbc@xn--exmple-cua.com" "$(psql_db e2e_enc_utf8 -c "SELECT checkout.normalize_email(' ÄBC@Exämple.com ')")" "a non-ASCII email"
psql_db postgres -c "DROP DATABASE e2e_enc_utf8"
