/*
 * The C side of the control socket's parity test (pbxfw-py/tests/test_control.py): one call
 * through the daemon's control socket per run.
 *
 *   client SOCKET METHOD [PARAMS-JSON]
 *
 * Prints `ok` and the result, or `err CODE` and the error's message.
 */
#include <stdio.h>
#include <string.h>

#include "pbxfw.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: client SOCKET METHOD [PARAMS-JSON]\n");
    return 2;
  }
  const char *params = argc > 3 ? argv[3] : "";
  pbxfw_client *client = NULL;
  pbxfw_error *err = NULL;
  pbxfw_buf out = {NULL, 0};
  pbxfw_result r = pbxfw_client_connect(argv[1], strlen(argv[1]), 30000, &client, &err);
  if (r == PBXFW_OK) {
    r = pbxfw_client_call(client, argv[2], strlen(argv[2]), params, strlen(params), 0, &out,
                          &err);
  }
  if (r == PBXFW_OK) {
    printf("ok\n%.*s", (int)out.len, out.ptr ? (const char *)out.ptr : "");
  } else {
    printf("err %d\n%s", (int)r, err ? pbxfw_error_message(err) : "");
  }
  pbxfw_buf_free(&out);
  pbxfw_error_free(&err);
  pbxfw_client_free(&client);
  pbxfw_client_free(&client); /* freeing twice through the same variable is harmless */
  return r == PBXFW_OK ? 0 : 1;
}
