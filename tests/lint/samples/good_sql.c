/* What check_sql.py accepts: literals, DB_SQL(literal), static const literals. */
#include <mysql.h>

static const char lookup[] = "SELECT id FROM users WHERE username = ?";

void good(MYSQL *m, MYSQL_STMT *stmt, conn_t *conn, dbop_t *op, int *ret)
{
    mysql_query(m, "SELECT 1");
    mysql_real_query(m, "SELECT " "2", 8);
    mysql_stmt_prepare(stmt, lookup, sizeof lookup - 1);
    mysql_real_query_start(ret, m, DB_SQL("START TRANSACTION"), 17);
    conn_exec(conn, DB_SQL("SELECT id FROM users WHERE id = ?"), NULL, 0, NULL, NULL, NULL);
    op->sql = DB_SQL("SELECT seq FROM clipboard_items WHERE user_id = ?");
    conn_exec(conn, op->sql, NULL, 0, NULL, NULL, NULL);
}
