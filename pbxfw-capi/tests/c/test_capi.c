/* The C API from C: every function, every error path, ownership. Built with
 * gcc -Wall -Wextra -Werror against pbxfw.h and run (also under valgrind) by tests/c_suite.rs. */

#include "pbxfw.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
      failures++;                                                               \
    }                                                                           \
  } while (0)

/* Whether the buffer holds `needle`. */
static int contains(const pbxfw_buf *b, const char *needle) {
  size_t n = strlen(needle);
  if (b->ptr == NULL || b->len < n) return 0;
  for (size_t i = 0; i + n <= b->len; i++)
    if (memcmp(b->ptr + i, needle, n) == 0) return 1;
  return 0;
}

static size_t count(const pbxfw_buf *b, const char *needle) {
  size_t n = strlen(needle), found = 0;
  for (size_t i = 0; b->ptr != NULL && i + n <= b->len; i++)
    if (memcmp(b->ptr + i, needle, n) == 0) found++;
  return found;
}

static const char POLICY[] =
    "[interfaces]\n"
    "eth0 = \"internet\"\n"
    "eth1 = \"local\"\n"
    "[[networks]]\n"
    "source = \"10.1.2.3/8\"\n"
    "zone = \"local\"\n";

static pbxfw_policy *parse(const char *text, pbxfw_format format) {
  pbxfw_policy *p = NULL;
  pbxfw_error *err = NULL;
  pbxfw_result r = pbxfw_policy_parse(text, strlen(text), format, &p, &err);
  CHECK(r == PBXFW_OK);
  CHECK(err == NULL);
  CHECK(p != NULL);
  return p;
}

static void test_policy(void) {
  pbxfw_policy *p = parse(POLICY, PBXFW_FORMAT_TOML);
  pbxfw_buf b = {NULL, 0};
  pbxfw_error *err = NULL;

  CHECK(pbxfw_policy_diagnostics(p, &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "\"path\":\"networks[0].source\""));
  CHECK(contains(&b, "\"severity\":\"warning\""));
  pbxfw_buf_free(&b);
  CHECK(b.ptr == NULL && b.len == 0);
  pbxfw_buf_free(&b); /* freeing twice is harmless */
  pbxfw_buf_free(NULL);

  CHECK(pbxfw_policy_fingerprint(p, &b, NULL) == PBXFW_OK);
  CHECK(b.len == 16);
  pbxfw_buf fp = b;
  b.ptr = NULL;
  b.len = 0;

  CHECK(pbxfw_policy_compile(p, "nft", 3, &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "table inet pbxfw {"));
  CHECK(contains(&b, "comment \"zone: interfaces\""));
  pbxfw_buf_free(&b);
  CHECK(pbxfw_policy_compile(p, "iptables", 8, &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "-j PBXFW"));
  pbxfw_buf_free(&b);
  CHECK(pbxfw_policy_compile(p, "ir", 2, &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "pbxfw-ir 1\n"));
  pbxfw_buf_free(&b);

  /* The same policy as JSON has the same fingerprint. */
  pbxfw_policy *q = parse(
      "{\"interfaces\":{\"eth0\":\"internet\",\"eth1\":\"local\"},"
      "\"networks\":[{\"source\":\"10.1.2.3/8\",\"zone\":\"local\"}]}",
      PBXFW_FORMAT_JSON);
  CHECK(pbxfw_policy_fingerprint(q, &b, NULL) == PBXFW_OK);
  CHECK(b.len == fp.len && memcmp(b.ptr, fp.ptr, fp.len) == 0);
  pbxfw_buf_free(&b);
  pbxfw_buf_free(&fp);
  pbxfw_policy_free(&q);
  CHECK(q == NULL);

  /* An unknown backend: an error, and the out-buffer untouched. */
  b.ptr = (uint8_t *)0x1;
  b.len = 77;
  CHECK(pbxfw_policy_compile(p, "pf", 2, &b, &err) == PBXFW_ERR_ARGUMENT);
  CHECK(b.ptr == (uint8_t *)0x1 && b.len == 77);
  CHECK(pbxfw_error_code(err) == PBXFW_ERR_ARGUMENT);
  CHECK(strstr(pbxfw_error_message(err), "unknown backend") != NULL);
  pbxfw_error_free(&err);
  CHECK(err == NULL);
  pbxfw_error_free(&err);
  pbxfw_error_free(NULL);
  b.ptr = NULL;
  b.len = 0;

  /* explain */
  const char *ssh = "{\"iface\":\"eth1\",\"src\":\"192.0.2.5\",\"proto\":\"tcp\",\"dport\":22}";
  CHECK(pbxfw_policy_explain(p, ssh, strlen(ssh), &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "\"verdict\":\"accept\""));
  CHECK(contains(&b, "\"decided_by\":\"zone:local service:ssh\""));
  pbxfw_buf_free(&b);
  const char *echo = "{\"iface\":\"eth0\",\"src\":\"2001:db8::1\",\"proto\":\"icmpv6\"}";
  CHECK(pbxfw_policy_explain(p, echo, strlen(echo), &b, NULL) == PBXFW_OK);
  CHECK(contains(&b, "\"verdict\":\"accept\""));
  pbxfw_buf_free(&b);
  const char *bad_packets[] = {
      "{\"iface\":\"eth0\",\"src\":\"nope\",\"proto\":\"udp\",\"dport\":5060}",
      "{\"iface\":\"eth0\",\"src\":\"192.0.2.1\",\"proto\":\"sctp\"}",
      "{\"iface\":\"eth0\",\"src\":\"192.0.2.1\",\"proto\":\"icmp\",\"dport\":1}",
      "{\"iface\":\"eth0\",\"src\":\"192.0.2.1\",\"proto\":\"udp\",\"dport\":70000}",
      "{\"iface\":\"eth0\",\"src\":\"192.0.2.1\",\"proto\":\"udp\",\"colour\":\"red\"}",
      "[]",
      "",
  };
  for (size_t i = 0; i < sizeof bad_packets / sizeof bad_packets[0]; i++) {
    CHECK(pbxfw_policy_explain(p, bad_packets[i], strlen(bad_packets[i]), &b, &err) ==
          PBXFW_ERR_ARGUMENT);
    CHECK(b.ptr == NULL);
    pbxfw_error_free(&err);
  }

  pbxfw_policy_free(&p);
  CHECK(p == NULL);
  pbxfw_policy_free(&p); /* harmless */
  pbxfw_policy_free(NULL);
}

static void test_invalid_policies(void) {
  pbxfw_policy *p = NULL;
  pbxfw_error *err = NULL;
  const char *bad = "[interfaces]\neth0 = \"dmz\"\n[pbx]\nrtp = \"20000-10000\"\n";
  CHECK(pbxfw_policy_parse(bad, strlen(bad), PBXFW_FORMAT_TOML, &p, &err) == PBXFW_ERR_INVALID);
  CHECK(p == NULL);
  CHECK(pbxfw_error_code(err) == PBXFW_ERR_INVALID);
  CHECK(strstr(pbxfw_error_message(err), "the policy is invalid") != NULL);
  CHECK(strstr(pbxfw_error_message(err), "interfaces.eth0") != NULL);
  pbxfw_buf d = {NULL, 0};
  CHECK(pbxfw_error_diagnostics(err, &d) == PBXFW_OK);
  CHECK(contains(&d, "\"path\":\"interfaces.eth0\""));
  CHECK(contains(&d, "\"path\":\"pbx.rtp\""));
  CHECK(count(&d, "\"severity\":\"error\"") == 2);
  pbxfw_buf_free(&d);
  pbxfw_error_free(&err);

  /* A format that is no pbxfw_format is an argument error, never undefined behaviour. */
  CHECK(pbxfw_policy_parse("", 0, 7, &p, &err) == PBXFW_ERR_ARGUMENT);
  CHECK(strstr(pbxfw_error_message(err), "not a pbxfw_format") != NULL);
  pbxfw_error_free(&err);
  CHECK(pbxfw_policy_parse("", 0, 0xffffffffu, &p, &err) == PBXFW_ERR_ARGUMENT);
  pbxfw_error_free(&err);
  CHECK(pbxfw_policy_parse("[x", 2, PBXFW_FORMAT_TOML, &p, &err) == PBXFW_ERR_PARSE);
  CHECK(strstr(pbxfw_error_message(err), "TOML syntax error") != NULL);
  CHECK(pbxfw_error_diagnostics(err, &d) == PBXFW_OK);
  CHECK(d.len == 2 && memcmp(d.ptr, "[]", 2) == 0);
  pbxfw_buf_free(&d);
  pbxfw_error_free(&err);
  CHECK(pbxfw_policy_parse("{", 1, PBXFW_FORMAT_JSON, &p, &err) == PBXFW_ERR_PARSE);
  pbxfw_error_free(&err);

  /* Invalid UTF-8, NULL text with a length, NULL out: errors, never crashes. */
  const char latin1[] = "[interfaces]\neth0 = \"caf\xe9\"\n";
  CHECK(pbxfw_policy_parse(latin1, strlen(latin1), PBXFW_FORMAT_TOML, &p, &err) ==
        PBXFW_ERR_UTF8);
  pbxfw_error_free(&err);
  CHECK(pbxfw_policy_parse(NULL, 5, PBXFW_FORMAT_TOML, &p, &err) == PBXFW_ERR_NULL);
  CHECK(strstr(pbxfw_error_message(err), "text is NULL") != NULL);
  pbxfw_error_free(&err);
  CHECK(pbxfw_policy_parse("", 0, PBXFW_FORMAT_TOML, NULL, &err) == PBXFW_ERR_NULL);
  pbxfw_error_free(&err);
  /* An empty document is a valid (all-default) policy; NULL is fine for empty text. */
  CHECK(pbxfw_policy_parse(NULL, 0, PBXFW_FORMAT_TOML, &p, NULL) == PBXFW_OK);
  pbxfw_policy_free(&p);

  /* NULL objects everywhere. */
  pbxfw_buf b = {NULL, 0};
  CHECK(pbxfw_policy_compile(NULL, "nft", 3, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_policy_explain(NULL, "{}", 2, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_policy_diagnostics(NULL, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_policy_fingerprint(NULL, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_error_diagnostics(NULL, &b) == PBXFW_ERR_NULL);
  CHECK(pbxfw_error_code(NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_error_message(NULL) == NULL);
  CHECK(pbxfw_responsive_new(NULL, NULL, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_responsive_tick(NULL, 1, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_kernel_apply(NULL, "nft", 3, NULL, 0, &b, NULL) == PBXFW_ERR_NULL);
  CHECK(pbxfw_kernel_status("pf", 2, &b, NULL) == PBXFW_ERR_ARGUMENT);
  CHECK(pbxfw_kernel_disable("pf", 2, NULL, NULL) == PBXFW_ERR_ARGUMENT);
  CHECK(pbxfw_kernel_rollback("pf", 2, NULL, NULL) == PBXFW_ERR_ARGUMENT);
  CHECK(pbxfw_kernel_carry_out(NULL, "nft", 3, "[]", 2, 0, NULL, NULL) == PBXFW_ERR_NULL);
  {
    /* Wrong options and actions are argument errors before the kernel is touched. */
    pbxfw_policy *q = parse(POLICY, PBXFW_FORMAT_TOML);
    pbxfw_error *e = NULL;
    const char *opts = "{\"confirm\": \"soon\"}";
    CHECK(pbxfw_kernel_apply(q, "nft", 3, opts, strlen(opts), &b, &e) == PBXFW_ERR_ARGUMENT);
    CHECK(strstr(pbxfw_error_message(e), "options") != NULL);
    pbxfw_error_free(&e);
    const char *admins = "{\"admins\": [\"not-an-address\"]}";
    CHECK(pbxfw_kernel_apply(q, "nft", 3, admins, strlen(admins), &b, &e) == PBXFW_ERR_ARGUMENT);
    pbxfw_error_free(&e);
    const char *acts = "[{\"action\": \"shred\"}]";
    CHECK(pbxfw_kernel_carry_out(q, "nft", 3, acts, strlen(acts), 0, NULL, &e) ==
          PBXFW_ERR_ARGUMENT);
    pbxfw_error_free(&e);
    pbxfw_policy_free(&q);
  }
  CHECK(b.ptr == NULL);
}

static void test_responsive(void) {
  pbxfw_policy *p = parse(POLICY, PBXFW_FORMAT_TOML);
  pbxfw_responsive *r = NULL;
  pbxfw_error *err = NULL;
  CHECK(pbxfw_responsive_new(p, &r, &err) == PBXFW_OK);
  pbxfw_buf a = {NULL, 0};
  size_t bans = 0;
  char event[256];
  for (int i = 0; i < 5; i++) {
    int n = snprintf(event, sizeof event,
                     "{\"event\":\"auth_failed\",\"source\":\"203.0.113.9\","
                     "\"reason\":\"unknown_account\",\"account\":\"%d\",\"protocol\":\"pjsip\"}",
                     100 + i);
    CHECK(pbxfw_responsive_on_event(r, event, (size_t)n, 1795000000 + i, &a, &err) == PBXFW_OK);
    bans += count(&a, "\"action\":\"ban\"");
    pbxfw_buf_free(&a);
  }
  CHECK(bans == 1);
  CHECK(pbxfw_responsive_bans(r, 1795000010, &a, NULL) == PBXFW_OK);
  CHECK(contains(&a, "\"prefix\":\"203.0.113.9\""));
  pbxfw_buf_free(&a);

  /* An event carrying its own time, with now = 0. */
  const char *reg = "{\"event\":\"registered\",\"source\":\"198.51.100.7\",\"account\":\"300\","
                    "\"expires\":3600,\"at\":1795000020}";
  CHECK(pbxfw_responsive_on_event(r, reg, strlen(reg), 0, &a, NULL) == PBXFW_OK);
  CHECK(contains(&a, "\"action\":\"allow_registered\""));
  pbxfw_buf_free(&a);
  const char *untimed = "{\"event\":\"registered\",\"source\":\"198.51.100.8\",\"account\":\"301\",\"expires\":600}";
  /* Neither `now` nor `at`: the clock, as in Python. */
  CHECK(pbxfw_responsive_on_event(r, untimed, strlen(untimed), 0, &a, &err) == PBXFW_OK);
  CHECK(contains(&a, "\"action\":\"allow_registered\""));
  pbxfw_buf_free(&a);
  CHECK(pbxfw_responsive_on_event(r, "{\"event\":\"x\"}", 13, 1, &a, &err) == PBXFW_ERR_ARGUMENT);
  CHECK(strstr(pbxfw_error_message(err), "event:") != NULL);
  pbxfw_error_free(&err);

  /* Snapshot, restore: the same state. */
  pbxfw_buf snap = {NULL, 0};
  CHECK(pbxfw_responsive_snapshot(r, &snap, NULL) == PBXFW_OK);
  pbxfw_responsive *r2 = NULL;
  CHECK(pbxfw_responsive_restore(p, (const char *)snap.ptr, snap.len, &r2, NULL) == PBXFW_OK);
  pbxfw_buf snap2 = {NULL, 0};
  CHECK(pbxfw_responsive_snapshot(r2, &snap2, NULL) == PBXFW_OK);
  CHECK(snap.len == snap2.len && memcmp(snap.ptr, snap2.ptr, snap.len) == 0);
  pbxfw_buf_free(&snap);
  pbxfw_buf_free(&snap2);
  CHECK(pbxfw_responsive_restore(p, "garbage", 7, &r2, &err) == PBXFW_ERR_STATE);
  CHECK(r2 != NULL); /* untouched on failure: still the restored machine */
  pbxfw_error_free(&err);

  CHECK(pbxfw_responsive_tick(r, 1795000000 + 10000000, &a, NULL) == PBXFW_OK);
  pbxfw_buf_free(&a);
  CHECK(pbxfw_responsive_bans(r, 1795000000 + 10000000, &a, NULL) == PBXFW_OK);
  CHECK(a.len == 2 && memcmp(a.ptr, "[]", 2) == 0);
  pbxfw_buf_free(&a);

  pbxfw_responsive_free(&r);
  pbxfw_responsive_free(&r2);
  CHECK(r == NULL && r2 == NULL);
  pbxfw_responsive_free(&r);
  pbxfw_responsive_free(NULL);
  pbxfw_policy_free(&p);
}

/* One responsive handle and one policy used by several threads at once: calls on the handle
 * are serialised inside it, and every event is counted once. */
struct worker {
  pbxfw_responsive *r;
  int id;
  size_t bans;
};

static void *feed(void *arg) {
  struct worker *w = arg;
  char event[256];
  for (int i = 0; i < 300; i++) {
    int n = snprintf(event, sizeof event,
                     "{\"event\":\"auth_failed\",\"source\":\"203.0.%d.%d\","
                     "\"reason\":\"unknown_account\",\"account\":\"1\"}",
                     w->id, i / 3);
    pbxfw_buf a = {NULL, 0};
    if (pbxfw_responsive_on_event(w->r, event, (size_t)n, 1795000000, &a, NULL) != PBXFW_OK) {
      return NULL;
    }
    w->bans += count(&a, "\"action\":\"ban\"");
    pbxfw_buf_free(&a);
  }
  return NULL;
}

static void test_threads(void) {
  pbxfw_policy *p = parse(POLICY, PBXFW_FORMAT_TOML);
  pbxfw_responsive *r = NULL;
  CHECK(pbxfw_responsive_new(p, &r, NULL) == PBXFW_OK);
  pthread_t t[4];
  struct worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct worker){r, i + 1, 0};
    CHECK(pthread_create(&t[i], NULL, feed, &w[i]) == 0);
  }
  size_t bans = 0;
  for (int i = 0; i < 4; i++) {
    CHECK(pthread_join(t[i], NULL) == 0);
    bans += w[i].bans;
  }
  /* Each thread's 100 sources fail three times: every one of the 400 is banned once. */
  CHECK(bans == 400);
  pbxfw_responsive_free(&r);
  pbxfw_policy_free(&p);
}

/* Discovery: the FreePBX tree of testdata/asterisk, a directory without Asterisk files, and a
 * policy whose pbx.discover merges it. */
static void test_discover(void) {
  static const char dir[] = PBXFW_TESTDATA "/asterisk";
  pbxfw_buf b = {NULL, 0};
  pbxfw_error *err = NULL;
  CHECK(pbxfw_discover(dir, strlen(dir), &b, &err) == PBXFW_OK);
  CHECK(contains(&b, "\"host\":\"192.0.2.80\""));
  CHECK(contains(&b, "\"origin\":\"rtp_additional.conf:11\""));
  CHECK(count(&b, "\"protocol\":") == 13);
  pbxfw_buf_free(&b);

  static const char none[] = PBXFW_TESTDATA "/cases";
  CHECK(pbxfw_discover(none, strlen(none), &b, &err) == PBXFW_ERR_IO);
  CHECK(b.ptr == NULL);
  CHECK(err != NULL && strstr(pbxfw_error_message(err), "no Asterisk configuration") != NULL);
  pbxfw_error_free(&err);
  CHECK(pbxfw_discover(NULL, 5, &b, NULL) == PBXFW_ERR_NULL);

  static const char text[] = "[pbx]\ndiscover = \"" PBXFW_TESTDATA "/asterisk\"\n";
  pbxfw_policy *p = parse(text, PBXFW_FORMAT_TOML);
  CHECK(pbxfw_policy_compile(p, "ir", 2, &b, NULL) == PBXFW_OK);
  CHECK(contains(&b, "trunk:branch-office"));
  pbxfw_buf_free(&b);
  pbxfw_policy_free(&p);
}

int main(void) {
  CHECK(strlen(pbxfw_version()) > 0);
  test_policy();
  test_invalid_policies();
  test_responsive();
  test_threads();
  test_discover();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("c api: all checks passed\n");
  return 0;
}
