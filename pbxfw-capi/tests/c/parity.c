/*
 * The C side of the front-end parity test (pbxfw-py/tests/test_parity.py): one step of the
 * sequence per run, through the C API.
 *
 *   parity apply POLICY.toml [OPTIONS-JSON] | parity confirm | parity rollback | parity status
 *
 * Prints `ok` and the result, or `err CODE` and the error's message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbxfw.h"

static int report(pbxfw_result r, pbxfw_buf *out, pbxfw_error **err) {
  if (r == PBXFW_OK) {
    printf("ok\n%.*s", (int)out->len, out->ptr ? (const char *)out->ptr : "");
    pbxfw_buf_free(out);
    return 0;
  }
  printf("err %d\n%s", (int)r, *err ? pbxfw_error_message(*err) : "");
  pbxfw_error_free(err);
  return 1;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(2);
  }
  char *text = NULL;
  size_t cap = 0;
  *len = 0;
  for (;;) {
    if (*len == cap) {
      cap = cap ? cap * 2 : 4096;
      text = realloc(text, cap);
      if (!text) exit(2);
    }
    size_t n = fread(text + *len, 1, cap - *len, f);
    if (n == 0) break;
    *len += n;
  }
  fclose(f);
  return text;
}

int main(int argc, char **argv) {
  pbxfw_buf out = {NULL, 0};
  pbxfw_error *err = NULL;
  const char *backend = "nft";
  if (argc >= 3 && strcmp(argv[1], "apply") == 0) {
    size_t len;
    char *text = slurp(argv[2], &len);
    pbxfw_policy *p = NULL;
    pbxfw_result r = pbxfw_policy_parse(text, len, PBXFW_FORMAT_TOML, &p, &err);
    free(text);
    if (r != PBXFW_OK) return report(r, &out, &err);
    const char *opts = argc >= 4 ? argv[3] : "";
    r = pbxfw_kernel_apply(p, backend, strlen(backend), opts, strlen(opts), &out, &err);
    pbxfw_policy_free(&p);
    return report(r, &out, &err);
  }
  if (argc == 2 && strcmp(argv[1], "confirm") == 0)
    return report(pbxfw_kernel_confirm(&out, &err), &out, &err);
  if (argc == 2 && strcmp(argv[1], "rollback") == 0)
    return report(pbxfw_kernel_rollback(backend, strlen(backend), &out, &err), &out, &err);
  if (argc == 2 && strcmp(argv[1], "status") == 0)
    return report(pbxfw_kernel_status(backend, strlen(backend), &out, &err), &out, &err);
  fprintf(stderr, "usage: parity apply POLICY [OPTIONS] | confirm | rollback | status\n");
  return 2;
}
