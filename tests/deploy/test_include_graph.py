"""The include graph of gateway/, marketo/, soap/ and config/ has no cycle
(scripts/include_graph.py), and the check finds the cycles it is meant to.

Static: reads the sources, builds nothing.
"""
import importlib.util
import io
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(TOP, "scripts", "include_graph.py")

_spec = importlib.util.spec_from_file_location("include_graph", SCRIPT)
include_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(include_graph)


def check_tree(root, files):
    """Writes files ({path: text}) under root and runs the check on d/:
    (number of cycles, report)."""
    for path, text in files.items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)
    out = io.StringIO()
    return include_graph.check(str(root), ["d"], out), out.getvalue()


# A connection manager whose header also declares the backends built on it.
REDIS_H = """
#ifndef REDIS_H
#define REDIS_H
int r_script(const char *s);       /* redis.c */
void *cache_new(void);             /* cache.c */
#endif
"""
CACHE_C = """
#include "d/redis.h"
void *cache_new(void)
{
    return r_script("GET") ? 0 : (void *)1;
}
"""


def test_tree_has_no_cycle():
    run = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 cycle(s)" in run.stdout


def test_factory_in_the_manager_is_a_cycle(tmp_path):
    n, report = check_tree(tmp_path, {
        "d/redis.h": REDIS_H,
        "d/cache.c": CACHE_C,
        "d/redis.c": """
#include "d/redis.h"
int r_script(const char *s) { return s[0]; }
void *backends(void) { return cache_new(); }
""",
    })
    assert n == 1, report
    assert "source cycle: d/cache.c <-> d/redis.c" in report
    assert "d/redis.c -> d/cache.c: calls cache_new (d/redis.h)" in report
    assert "d/cache.c -> d/redis.c: calls r_script (d/redis.h)" in report


def test_factory_apart_is_no_cycle(tmp_path):
    n, report = check_tree(tmp_path, {
        "d/redis.h": REDIS_H,
        "d/cache.c": CACHE_C,
        # named in a comment and a string only: no call
        "d/redis.c": """
#include "d/redis.h"
int r_script(const char *s)
{
    /* cache_new() is called by backends.c */
    return s[0] == "cache_new()"[0];
}
""",
        "d/backends.c": '#include "d/redis.h"\nvoid *backends(void) { return cache_new(); }\n',
    })
    assert n == 0, report


def test_route_table_is_not_a_call(tmp_path):
    # The router names its handlers in a table; the handlers call the router.
    n, report = check_tree(tmp_path, {
        "d/server.h": "void req_reply(int status);\nvoid handle_leads(void);\n",
        "d/server.c": """
#include "d/server.h"
static const struct { const char *path; void (*fn)(void); } routes[] = {
    {"/leads", handle_leads},
};
void req_reply(int status) { (void)status; (void)routes; }
""",
        "d/lookup.c": '#include "d/server.h"\nvoid handle_leads(void) { req_reply(200); }\n',
    })
    assert n == 0, report


def test_calls_through_macros_and_inline_functions(tmp_path):
    n, report = check_tree(tmp_path, {
        "d/log.h": "void log_emit(int level);\n#define LOG(l) log_emit(l)\n",
        "d/app.h": "int app_level(void);\n"
                   "static inline int app_quiet(void) { return app_level() > 3; }\n",
        "d/log.c": '#include "d/log.h"\n#include "d/app.h"\n'
                   "void log_emit(int level) { if (app_quiet()) return; (void)level; }\n",
        "d/app.c": '#include "d/app.h"\n#include "d/log.h"\n'
                   "int app_level(void) { LOG(1); return 2; }\n",
    })
    assert n == 1, report
    assert "d/app.c -> d/log.c: calls log_emit (d/log.h)" in report
    assert "d/log.c -> d/app.c: calls app_level (d/app.h)" in report


def test_headers_including_each_other(tmp_path):
    n, report = check_tree(tmp_path, {
        "d/a.h": '#include "b.h"\n',
        "d/b.h": '#include "d/a.h"\n',
        "d/a.c": '#include "d/a.h"\n',
    })
    assert n == 1, report
    assert "include cycle: d/a.h <-> d/b.h" in report
