#!/usr/bin/env python3
"""Fails if any C source builds SQL text at run time (design rule 3: every statement
is prepared with bound parameters; no SQL is ever pasted together).

    check_sql.py [--root DIR]          # checks broker/ workers/ gateway/ common/
    check_sql.py FILE...               # checks these files only (the self-test)

What counts as fixed SQL text, for the SQL argument of a call:
- a string literal (adjacent literals included);
- DB_SQL(x): workers/db/conn.h defines it as ("" x ""), which only compiles when x
  is a string literal, so the compiler enforces it (this also covers the ops.h macros
  that pass their `sql` parameter through DB_SQL);
- the name of a `static const char NAME[] = "literal";` of the same file;
- inside one of the WRAPPERS below, that wrapper's own SQL parameter: the wrapper's
  call sites are then checked by the same rules;
- a struct field in FIELDS (op->sql), when every assignment to it anywhere in the
  checked files is itself fixed text (or a wrapper's parameter inside that wrapper).

Anything else (a buffer filled by snprintf, strcat, a variable of unknown origin) is
a violation. The one exception is in EXCEPTIONS, with its reason.
"""
import os
import re
import sys

AREAS = ["broker", "workers", "gateway", "common"]

# libmariadb calls that send SQL text: name -> index of the SQL argument
SINKS = {
    "mysql_query": 1, "mysql_real_query": 1, "mysql_send_query": 1,
    "mysql_stmt_prepare": 1,
    "mysql_query_start": 2, "mysql_real_query_start": 2, "mysql_send_query_start": 2,
    "mysql_stmt_prepare_start": 2,
}

# our functions whose parameter reaches a sink: name -> (index of the SQL argument,
# name of that parameter inside the function, the file for static functions or None)
WRAPPERS = {
    "conn_exec": (1, "sql", None),     # workers/db/conn.c: prepares (and caches) a statement
    "conn_query": (1, "sql", None),    # workers/db/conn.c: a text query (START TRANSACTION)
    "dbop_exec": (1, "sql", None),     # workers/db/ops.c: an op's statement
    "dbop_exec_write": (1, "sql", None),  # workers/db/ops.c: an op's autocommit write
    "s_set_statement": (1, "sql", "workers/db/ops.c"),  # keeps an op's next statement
    "s_cache_add": (1, "sql", "workers/db/conn.c"),  # keeps a prepared statement by its text
    "s_query": (1, "sql", "workers/db/migrate.c"),   # runs a query, drains its results
    "s_scalar": (1, "sql", "workers/db/migrate.c"),  # SELECT with one integer column
}

# fields that carry SQL from where it is chosen to where it is sent
FIELDS = ["sql"]

# (file, enclosing function, called function, exact SQL argument): allowed, with the
# reason
EXCEPTIONS = {
    ("workers/db/migrate.c", "migrate_run", "s_query", "sql"):
        "the migration runner applies the repository's own migration files "
        "(workers/db/migrations/NNN_name.sql, read from migrations_dir): DDL that is "
        "fixed text in the repo, run as a multi-statement script, not built from input",
}

LITERAL = re.compile(r'^(\s*(L|u8|u|U)?"([^"\\]|\\.)*"\s*)+$', re.S)
DB_SQL = re.compile(r"^DB_SQL\s*\(.*\)$", re.S)
IDENT = re.compile(r"^[A-Za-z_]\w*$")
FIELD = re.compile(r"^[A-Za-z_]\w*\s*(->|\.)\s*(\w+)$")
FUNC_DEF = re.compile(r"^[A-Za-z_][^;{}()]*?\b([A-Za-z_]\w*)\s*\([^;{}]*\)\s*\{", re.M)


def strip_comments(text):
    """Comments become spaces (line numbers kept); strings are left alone."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def call_args(text, open_paren):
    """The top-level arguments of the call whose '(' is at open_paren, and the index
    after its ')'; None if unbalanced."""
    depth, i, start, args = 0, open_paren, open_paren + 1, []
    while i < len(text):
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return args, i + 1
        elif c == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    return None


def enclosing_function(text, pos):
    name = None
    for m in FUNC_DEF.finditer(text, 0, pos):
        name = m.group(1)
    return name


def static_literals(text):
    names = set()
    for m in re.finditer(r"static\s+const\s+char\s+(\w+)\s*\[\s*\]\s*=\s*((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*;",
                         text):
        names.add(m.group(1))
    return names


class Checker:
    def __init__(self, files):
        self.files = files
        self.texts = {}
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                self.texts[f] = strip_comments(fh.read())
        self.problems = []

    def is_fixed(self, arg, path, text, pos, allow_fields=True):
        arg = arg.strip()
        while arg.startswith("(") and arg.endswith(")") and call_args(arg, 0) and \
                call_args(arg, 0)[1] == len(arg):
            arg = arg[1:-1].strip()
        if LITERAL.match(arg) or DB_SQL.match(arg) or (arg == "NULL" and not allow_fields):
            return True
        if IDENT.match(arg):
            if arg in static_literals(text):
                return True
            fn = enclosing_function(text, pos)
            if self.wrapper(fn, path) and WRAPPERS[fn][1] == arg:
                return True
            # a #define's parameter: the macro's call sites are what matter; only
            # DB_SQL(param) is accepted inside macros (handled above)
            return False
        m = FIELD.match(arg)
        if m and allow_fields and m.group(2) in FIELDS:
            return self.field_ok(m.group(2))
        return False

    @staticmethod
    def wrapper(fn, path):
        if fn not in WRAPPERS:
            return False
        f = WRAPPERS[fn][2]
        return f is None or path.replace(os.sep, "/").endswith(f)

    def field_ok(self, field):
        ok = True
        pat = re.compile(r"(->|\.)\s*%s\s*=(?!=)" % re.escape(field))
        for path, text in self.texts.items():
            for m in pat.finditer(text):
                end = text.find(";", m.end())
                rhs = text[m.end():end]
                if not self.is_fixed(rhs, path, text, m.start(), allow_fields=False):
                    self.report(path, text, m.start(), "field %s assigned SQL that is not fixed "
                                "text: %s" % (field, " ".join(rhs.split())))
                    ok = False
        return ok

    def report(self, path, text, pos, why):
        line = text.count("\n", 0, pos) + 1
        msg = "%s:%d: %s" % (path, line, why)
        if msg not in self.problems:
            self.problems.append(msg)

    def run(self):
        names = dict((k, v) for k, v in SINKS.items())
        names.update({k: v[0] for k, v in WRAPPERS.items()})
        for field in FIELDS:
            self.field_ok(field)  # every assignment, used by a sink or not
        call = re.compile(r"\b(%s)\s*\(" % "|".join(sorted(names, key=len, reverse=True)))
        for path, text in self.texts.items():
            for m in call.finditer(text):
                fn = m.group(1)
                if fn in WRAPPERS and not self.wrapper(fn, path):
                    continue  # a same-named static function of another file
                # a declaration or the definition itself is not a call
                before = text[max(0, m.start() - 80):m.start()]
                line_start = text.rfind("\n", 0, m.start()) + 1
                head = text[line_start:m.start()]
                parsed = call_args(text, m.end() - 1)
                if parsed is None:
                    continue
                args, after = parsed
                rest = text[after:after + 40].lstrip()
                if re.search(r"\b(int|void|long|bool|static|char)\b[\s*]*$", head) or \
                        rest.startswith("{") or (rest.startswith(";") and
                                                  re.search(r"(int|void|long|bool)\s*\**\s*$",
                                                            before)):
                    continue
                idx = names[fn]
                if idx >= len(args):
                    self.report(path, text, m.start(), "%s: cannot find its SQL argument" % fn)
                    continue
                arg = args[idx]
                if self.is_fixed(arg, path, text, m.start()):
                    continue
                encl = enclosing_function(text, m.start())
                exc = [r for (suffix, e, f, a), r in EXCEPTIONS.items()
                       if path.replace(os.sep, "/").endswith(suffix) and e == encl and
                       f == fn and a == arg]
                if exc:
                    continue
                self.report(path, text, m.start(), "%s gets SQL that is not fixed text: %s"
                            % (fn, " ".join(arg.split())))
        return self.problems


def sources(root):
    out = []
    for area in AREAS:
        for d, _, files in os.walk(os.path.join(root, area)):
            out += [os.path.join(d, f) for f in sorted(files) if f.endswith((".c", ".h"))]
    return sorted(out)


def main(argv):
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    files = []
    i = 0
    while i < len(argv):
        if argv[i] == "--root":
            root = argv[i + 1]
            i += 2
        else:
            files.append(argv[i])
            i += 1
    files = files or sources(root)
    problems = Checker(files).run()
    for p in problems:
        print(p)
    if problems:
        print("check_sql: %d place(s) build SQL at run time; use a literal (DB_SQL) with "
              "bound parameters" % len(problems))
        return 1
    print("check_sql: %d files, every SQL statement is fixed text" % len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
