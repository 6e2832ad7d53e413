/*
 * Key log for wolfSSL's example client and server (scripts/build-wolfssl.sh).
 *
 * wolfSSL 5.5.4's examples cannot write a key log, and its configure has no
 * option for one. The library does report every TLS 1.3 secret it derives
 * to a per-connection callback (wolfSSL_set_tls13_secret_cb, compiled in
 * with HAVE_SECRET_CALLBACK). This file is linked into the examples with
 * `-Wl,--wrap=wolfSSL_new`: every WOLFSSL object the examples create gets a
 * callback that appends the secret to the file named by $SSLKEYLOGFILE, in
 * the key log format of draft-ietf-tls-keylogfile (one line per secret:
 * "<label> <client_random hex> <secret hex>"). Without $SSLKEYLOGFILE
 * nothing is written. No wolfSSL source file is changed.
 *
 * Only the secrets of the handshake are reported: wolfSSL 5.5.4 does not call
 * the callback for the secrets a KeyUpdate derives (traffic secret N+1).
 */
#include <stdio.h>
#include <stdlib.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#ifndef HAVE_SECRET_CALLBACK
#error "build wolfSSL with CPPFLAGS=-DHAVE_SECRET_CALLBACK (scripts/build-wolfssl.sh)"
#endif

/* The original wolfSSL_new, as the linker's --wrap names it. */
WOLFSSL* __real_wolfSSL_new(WOLFSSL_CTX* ctx);
WOLFSSL* __wrap_wolfSSL_new(WOLFSSL_CTX* ctx);

/* draft-ietf-tls-keylogfile §3 labels for the secrets wolfSSL reports. */
static const char* keylog_label(int id)
{
    switch (id) {
    case CLIENT_EARLY_TRAFFIC_SECRET:     return "CLIENT_EARLY_TRAFFIC_SECRET";
    case CLIENT_HANDSHAKE_TRAFFIC_SECRET: return "CLIENT_HANDSHAKE_TRAFFIC_SECRET";
    case SERVER_HANDSHAKE_TRAFFIC_SECRET: return "SERVER_HANDSHAKE_TRAFFIC_SECRET";
    case CLIENT_TRAFFIC_SECRET:           return "CLIENT_TRAFFIC_SECRET_0";
    case SERVER_TRAFFIC_SECRET:           return "SERVER_TRAFFIC_SECRET_0";
    case EARLY_EXPORTER_SECRET:           return "EARLY_EXPORTER_SECRET";
    case EXPORTER_SECRET:                 return "EXPORTER_SECRET";
    default:                              return NULL;
    }
}

static int keylog_secret(WOLFSSL* ssl, int id, const unsigned char* secret,
                         int secret_len, void* ctx)
{
    const char* path = getenv("SSLKEYLOGFILE");
    const char* label = keylog_label(id);
    unsigned char client_random[32];
    FILE* out;
    int i;

    (void)ctx;
    /* Never fail the handshake because of the log: return 0 (success). */
    if (path == NULL || *path == '\0' || label == NULL)
        return 0;
    if (wolfSSL_get_client_random(ssl, client_random, sizeof(client_random))
            != sizeof(client_random))
        return 0;
    out = fopen(path, "a");
    if (out == NULL)
        return 0;
    fprintf(out, "%s ", label);
    for (i = 0; i < (int)sizeof(client_random); i++)
        fprintf(out, "%02x", client_random[i]);
    fputc(' ', out);
    for (i = 0; i < secret_len; i++)
        fprintf(out, "%02x", secret[i]);
    fputc('\n', out);
    fclose(out);
    return 0;
}

WOLFSSL* __wrap_wolfSSL_new(WOLFSSL_CTX* ctx)
{
    WOLFSSL* ssl = __real_wolfSSL_new(ctx);

    if (ssl != NULL)
        (void)wolfSSL_set_tls13_secret_cb(ssl, keylog_secret, NULL);
    return ssl;
}
