/* Planted violations for tests/lint/test_check_sql.py: each line marked BAD must be
   reported by check_sql.py. Never compiled. */
#include <mysql.h>
#include <stdio.h>

void bad_snprintf(MYSQL *m, const char *name)
{
    char buf[256];
    snprintf(buf, sizeof buf, "SELECT id FROM users WHERE username = '%s'", name);
    mysql_real_query(m, buf, strlen(buf)); /* BAD 1 */
}

void bad_variable(MYSQL_STMT *stmt, const char *query)
{
    mysql_stmt_prepare(stmt, query, strlen(query)); /* BAD 2 */
}

void bad_async(int *ret, MYSQL *m, char *q)
{
    mysql_real_query_start(ret, m, q, strlen(q)); /* BAD 3 */
}

void bad_wrapper(conn_t *conn, char *text)
{
    conn_exec(conn, text, NULL, 0, NULL, NULL, NULL); /* BAD 4 */
}

void bad_field(dbop_t *op, char *built)
{
    op->sql = built; /* BAD 5 */
}

void bad_concat(MYSQL *m, const char *table)
{
    char q[100] = "DELETE FROM ";
    strcat(q, table);
    mysql_query(m, q); /* BAD 6 */
}
