<?php
/*
 * The PHP side of the control socket's parity test (pbxfw-py/tests/test_control.py): one call
 * through PbxfwClient per run (plain PHP, no FFI).
 *
 *   php client.php SOCKET METHOD [PARAMS-JSON]
 *
 * Prints `ok` and the result as JSON, or `err CODE` and the message.
 */
declare(strict_types=1);

require __DIR__ . '/../Pbxfw.php';

[, $socket, $method] = $argv;
$params = isset($argv[3]) && $argv[3] !== '' ? json_decode($argv[3], true, 512, JSON_THROW_ON_ERROR) : [];
try {
    $client = new PbxfwClient($socket);
    $result = $client->call($method, $params);
    echo "ok\n", json_encode($result, JSON_UNESCAPED_SLASHES);
} catch (PbxfwException $e) {
    echo 'err ', $e->getCode(), "\n", $e->getMessage();
}
