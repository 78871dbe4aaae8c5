<?php
/*
 * The PHP side of the front-end parity test (pbxfw-py/tests/test_parity.py): one step of the
 * sequence per run, through the wrapper and the C API.
 *
 *   php -d ffi.enable=1 parity.php LIBPATH apply POLICY.toml [OPTIONS-JSON] | confirm | rollback | status
 *
 * Prints `ok` and the result, or `err CODE` and the exception's message.
 */

declare(strict_types=1);

require __DIR__ . '/../Pbxfw.php';

[$lib, $step] = [$argv[1], $argv[2]];
$pbxfw = Pbxfw::fromLibrary($lib);
try {
    $out = match ($step) {
        'apply' => json_encode(
            $pbxfw->parsePolicy((string) file_get_contents($argv[3]))
                ->apply('nft', json_decode($argv[4] ?? '{}', true) ?: []),
            JSON_THROW_ON_ERROR
        ),
        'confirm' => $pbxfw->confirm(),
        'rollback' => $pbxfw->rollback(),
        'status' => $pbxfw->statusJson(),
    };
    echo "ok\n$out";
} catch (PbxfwException $e) {
    echo "err {$e->getCode()}\n{$e->getMessage()}";
    exit(1);
}
