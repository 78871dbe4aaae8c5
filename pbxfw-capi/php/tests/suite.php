<?php
/*
 * The PHP suite of the C API, run by pbxfw-capi/tests/php_suite.rs:
 *   php -d ffi.enable=1 suite.php library LIBPATH [kernel]   (php-cli, FFI::cdef)
 *   php-cgi -q -d ffi.preload=… -d opcache.preload=… suite.php scope [kernel]   (preloaded)
 * Any PHP warning or notice fails it. Prints "php suite: N checks passed".
 */

declare(strict_types=1);

error_reporting(E_ALL);
set_error_handler(function (int $no, string $msg, string $file, int $line): bool {
    throw new ErrorException($msg, 0, $no, $file, $line);
});

require_once __DIR__ . '/../Pbxfw.php';

$checks = 0;
$failures = [];

function check(bool $cond, string $what): void
{
    global $checks, $failures;
    $checks++;
    if (!$cond) {
        $failures[] = $what;
    }
}

/** Run $f and return the PbxfwException it throws (or null). */
function raises(callable $f): ?PbxfwException
{
    try {
        $f();
    } catch (PbxfwException $e) {
        return $e;
    }
    return null;
}

function rss_kib(): int
{
    preg_match('/^VmRSS:\s+(\d+) kB/m', file_get_contents('/proc/self/status'), $m);
    return (int) $m[1];
}

$args = $argv ?? array_slice(explode(' ', (string) getenv('PBXFW_PHP_ARGS')), 0);
// php-cgi passes no $argv to the script: the harness uses PBXFW_PHP_ARGS there.
if (PHP_SAPI !== 'cli') {
    $args = array_merge(['suite.php'], explode(' ', (string) getenv('PBXFW_PHP_ARGS')));
}
$mode = $args[1] ?? 'library';
$pbxfw = $mode === 'scope' ? Pbxfw::fromScope() : Pbxfw::fromLibrary($args[2]);
$kernel = in_array('kernel', $args, true);
$ffi = $pbxfw->ffi();

$POLICY = "[interfaces]\neth0 = \"internet\"\neth1 = \"local\"\n"
    . "[[networks]]\nsource = \"10.1.2.3/8\"\nzone = \"local\"\n";

// --- policies ---------------------------------------------------------------------------------
check($pbxfw->version() !== '', 'version');
$policy = $pbxfw->parsePolicy($POLICY);
$diags = $policy->diagnostics();
check(count($diags) === 1 && $diags[0]['path'] === 'networks[0].source'
    && $diags[0]['severity'] === 'warning', 'warnings of a valid policy');
$fp = $policy->fingerprint();
check(strlen($fp) === 16, 'fingerprint');
$json = $pbxfw->parsePolicy(json_encode([
    'interfaces' => ['eth0' => 'internet', 'eth1' => 'local'],
    'networks' => [['source' => '10.1.2.3/8', 'zone' => 'local']],
]), 'json');
check($json->fingerprint() === $fp, 'the JSON form has the same fingerprint');
check(str_contains($policy->compile(), 'table inet pbxfw {'), 'compile nft');
check(str_contains($policy->compile('iptables'), "fingerprint $fp"), 'compile iptables');
check(str_starts_with($policy->compile('ir'), "pbxfw-ir 1\n"), 'compile ir');

$e = raises(fn () => $pbxfw->parsePolicy("[interfaces]\neth0 = \"dmz\"\n[pbx]\nrtp = \"20000-10000\"\n"));
check($e !== null && $e->getCode() === PbxfwException::INVALID, 'invalid policy: code');
$paths = $e ? array_column($e->diagnostics, 'path') : [];
sort($paths);
check($paths === ['interfaces.eth0', 'pbx.rtp'], 'invalid policy: every diagnostic');
check($e !== null && str_contains($e->getMessage(), '2 error(s)'), 'invalid policy: message');
$e = raises(fn () => $pbxfw->parsePolicy('[x'));
check($e?->getCode() === PbxfwException::PARSE && $e->diagnostics === [], 'TOML syntax error');
$e = raises(fn () => $pbxfw->parsePolicy('{', 'json'));
check($e?->getCode() === PbxfwException::PARSE, 'JSON syntax error');
$e = raises(fn () => $pbxfw->parsePolicy("[interfaces]\neth0 = \"caf\xe9\"\n"));
check($e?->getCode() === PbxfwException::UTF8, 'invalid UTF-8');
$e = raises(fn () => $pbxfw->parsePolicy('', 'yaml'));
check($e?->getCode() === PbxfwException::ARGUMENT, 'unknown format');
$e = raises(fn () => $policy->compile('pf'));
check($e?->getCode() === PbxfwException::ARGUMENT && str_contains($e->getMessage(), 'unknown backend'), 'unknown backend');

// --- discovery --------------------------------------------------------------------------------
$tree = dirname(__DIR__, 3) . '/testdata/asterisk';
$found = $pbxfw->discover($tree);
$hosts = array_map(fn ($t) => $t['protocol'] . ' ' . $t['host'], $found['policy']['pbx']['trunks']);
check(count($hosts) === 13 && in_array('iax 192.0.2.80', $hosts, true), 'discover: the trunks');
check($found['policy']['pbx']['rtp'] === '10000-20000', 'discover: the RTP range');
$e = raises(fn () => $pbxfw->discover(dirname(__DIR__, 3) . '/testdata/cases'));
check($e?->getCode() === PbxfwException::IO, 'discover: no Asterisk files');
$merged = $pbxfw->parsePolicy("[pbx]\ndiscover = \"$tree\"\n");
$a = $merged->explain(['iface' => 'eth0', 'src' => '192.0.2.80', 'proto' => 'udp', 'dport' => 4569]);
check($a['decided_by'] === 'trunk:branch-office', 'pbx.discover merges the trunks');

// --- explain ----------------------------------------------------------------------------------
$a = $policy->explain(['iface' => 'eth1', 'src' => '192.0.2.5', 'proto' => 'tcp', 'dport' => 22]);
check($a['verdict'] === 'accept' && $a['decided_by'] === 'zone:local service:ssh'
    && $a['zone'] === 'local', 'explain ssh from the LAN');
$a = $policy->explain(['iface' => 'eth0', 'src' => '198.51.100.1', 'proto' => 'tcp', 'dport' => 22]);
check($a['verdict'] === 'drop' && $a['decided_by'] === 'default', 'explain ssh from the internet');
foreach ([
    ['iface' => 'eth0', 'src' => 'nope', 'proto' => 'udp'],
    ['iface' => 'eth0', 'src' => '192.0.2.1', 'proto' => 'sctp'],
    ['iface' => 'eth0', 'src' => '192.0.2.1', 'proto' => 'icmp', 'dport' => 1],
    ['iface' => 'eth0', 'src' => '192.0.2.1', 'proto' => 'udp', 'colour' => 'red'],
] as $i => $bad) {
    $e = raises(fn () => $policy->explain($bad));
    check($e?->getCode() === PbxfwException::ARGUMENT, "bad packet $i");
}

// --- the C API's own guards, called raw (with ffi.enable=preload only preloaded code may) -------
if ($mode !== 'scope') {
    $buf = $ffi->new('pbxfw_buf');
    check($ffi->pbxfw_policy_compile(null, 'nft', 3, FFI::addr($buf), null) === PbxfwException::NULL_POINTER, 'NULL policy');
    check($ffi->pbxfw_policy_parse(null, 5, 0, null, null) === PbxfwException::NULL_POINTER, 'NULL text');
    check($ffi->pbxfw_error_message(null) === null, 'NULL error message');
    $raw = $ffi->new('pbxfw_policy*');
    check($ffi->pbxfw_policy_parse($POLICY, strlen($POLICY), 0, FFI::addr($raw), null) === 0, 'raw parse');
    $ffi->pbxfw_policy_free(FFI::addr($raw));
    check(FFI::isNull($raw), 'free sets the pointer to NULL');
    $ffi->pbxfw_policy_free(FFI::addr($raw)); // a second free is harmless by design
    $ffi->pbxfw_buf_free(FFI::addr($buf));
    $ffi->pbxfw_buf_free(FFI::addr($buf));
    check($buf->len === 0, 'buffers free twice harmlessly');
}

// --- the responsive state machine ----------------------------------------------------------------
$r = $policy->responsive();
$bans = 0;
for ($i = 0; $i < 5; $i++) {
    foreach ($r->onEvent(['event' => 'auth_failed', 'source' => '203.0.113.9',
        'reason' => 'unknown_account', 'account' => (string) (100 + $i), 'protocol' => 'pjsip'],
        1795000000 + $i) as $action) {
        $bans += $action['action'] === 'ban' ? 1 : 0;
    }
}
check($bans === 1, 'a scanner is banned once');
check($r->bans(1795000010) === [['prefix' => '203.0.113.9', 'until' => $r->bans(1795000010)[0]['until']]], 'bans');
$acts = $r->onEvent('{"event":"registered","source":"198.51.100.7","account":"300","expires":3600,"at":1795000020}');
check(($acts[0]['action'] ?? '') === 'allow_registered', 'a registration from a JSON line');
$e = raises(fn () => $r->onEvent(['event' => 'nonsense'], 1));
check($e?->getCode() === PbxfwException::ARGUMENT, 'wrong event JSON');
$snap = $r->snapshot();
check($policy->restoreResponsive($snap)->snapshot() === $snap, 'snapshot and restore');
$e = raises(fn () => $policy->restoreResponsive('garbage'));
check($e?->getCode() === PbxfwException::STATE, 'a corrupt snapshot');
check($r->tick(1795000000 + 10000000) !== null && $r->bans(1795000000 + 10000000) === [], 'bans expire');

// --- no leaks across 10k calls ---------------------------------------------------------------------
$round = function () use ($pbxfw, $POLICY): void {
    $p = $pbxfw->parsePolicy($POLICY);
    $p->compile();
    $p->explain(['iface' => 'eth0', 'src' => '203.0.113.10', 'proto' => 'udp', 'dport' => 5060]);
    raises(fn () => $pbxfw->parsePolicy("[interfaces]\neth0 = \"dmz\"\n"));
    $r = $p->responsive();
    $r->onEvent(['event' => 'auth_failed', 'source' => '203.0.113.9', 'reason' => 'wrong_password',
        'account' => '300', 'protocol' => 'pjsip'], 1795000000);
};
for ($i = 0; $i < 1000; $i++) {
    $round();
}
gc_collect_cycles();
$before = rss_kib();
for ($i = 0; $i < 10000; $i++) {
    $round();
}
gc_collect_cycles();
$grown = rss_kib() - $before;
check($grown < 2048, "RSS stable over 10k rounds (grew $grown KiB)");

// --- the kernel, when the harness runs this inside a network namespace ------------------------------
if ($kernel) {
    foreach (['nft', 'iptables-nft'] as $backend) {
        $applied = $policy->apply($backend);
        check($applied['fingerprint'] === $fp, "$backend: apply");
        $until = time() + 600;
        $done = $policy->carryOut([['action' => 'ban', 'prefix' => '192.0.2.9/32', 'until' => $until,
            'reason' => 'test']], $backend);
        check($done['updates'] === 1 && $done['elements'] === 1 && $done['failures'] === [],
            "$backend: the ban is carried out");
        $status = $pbxfw->status($backend);
        check($status['loaded'] === true && $status['fingerprint'] === $fp, "$backend: status");
        check(array_key_exists('pending_confirmation', $status) && array_key_exists('hostnames', $status),
            "$backend: the status is the full one");
        $ban4 = array_values(array_filter($status['sets'], fn ($s) => $s['name'] === 'ban4'))[0] ?? [];
        check(($ban4['size'] ?? 0) === 1, "$backend: the ban is in the kernel");
        $unban = [['action' => 'unban', 'prefix' => '192.0.2.9/32']];
        $policy->carryOut($unban, $backend);
        $policy->carryOut($unban, $backend);
        $ban4 = array_values(array_filter($pbxfw->status($backend)['sets'], fn ($s) => $s['name'] === 'ban4'))[0] ?? [];
        check(($ban4['size'] ?? -1) === 0, "$backend: the ban is lifted, twice without error");
        // Bans by hand, listed with their origin and reason, lifted for good.
        $banned = $policy->ban(['prefix' => '203.0.113.66', 'seconds' => 3600, 'reason' => 'web scan'],
            $backend);
        check($banned['set'] === 'ban4' && $banned['reason'] === 'web scan', "$backend: a ban by hand");
        $listed = $pbxfw->bans($backend)['bans'];
        check(count($listed) === 1 && $listed[0]['origin'] === 'manual' && $listed[0]['prefix'] === '203.0.113.66',
            "$backend: the ban is listed as made by hand");
        $e = raises(fn () => $policy->ban(['prefix' => '127.0.0.1', 'seconds' => 60], $backend));
        check($e?->getCode() === PbxfwException::REFUSED, "$backend: loopback is never banned");
        $lifted = $pbxfw->unban(['203.0.113.0/24'], $backend);
        check(count($lifted['lifted']) === 1 && $pbxfw->bans($backend)['bans'] === [],
            "$backend: unban lifts it");
        $lock = getenv('PBXFW_LOCK_FILE');
        if ($lock !== false) {
            touch($lock);
            $e = raises(fn () => $pbxfw->disable($backend));
            check($e?->getCode() === PbxfwException::LOCKED, "$backend: the lock file refuses disable");
            check($pbxfw->status($backend)['loaded'] === true, "$backend: still loaded under the lock");
            unlink($lock);
        }
        // A certificate-renewal window needs a policy that compiles one.
        $e = raises(fn () => $pbxfw->acme('open', 30, $backend));
        check($e?->getCode() === PbxfwException::ARGUMENT, "$backend: no window without settings.acme");
        $pbxfw->parsePolicy("[settings]\nacme = true\n[interfaces]\neth0 = \"internet\"\n")->apply($backend);
        $w = $pbxfw->acme('open', 30, $backend);
        check($w['open'] === true && $w['expires_in'] === 30 && $w['port'] === 80, "$backend: acme open");
        $w = $pbxfw->acme('status', 0, $backend);
        check($w['open'] === true && $w['expires_in'] > 0 && $w['expires_in'] <= 30, "$backend: acme status");
        check($pbxfw->acme('close', 0, $backend)['open'] === false
            && $pbxfw->acme('status', 0, $backend)['open'] === false, "$backend: acme close");
        $e = raises(fn () => $pbxfw->acme('opne', 30, $backend));
        check($e?->getCode() === PbxfwException::ARGUMENT, "$backend: an unknown acme action is refused");
        check($pbxfw->disable($backend) === true, "$backend: disable");
        check($pbxfw->disable($backend) === false, "$backend: disable again");
        check($pbxfw->status($backend)['loaded'] === false, "$backend: not loaded");
    }
    $e = raises(fn () => $policy->carryOut([['action' => 'shred', 'prefix' => '192.0.2.9/32']], 'nft'));
    check($e?->getCode() === PbxfwException::ARGUMENT, 'an unknown action is refused');
    $e = raises(fn () => $policy->apply('nft', ['confirm' => 'soon']));
    check($e?->getCode() === PbxfwException::ARGUMENT, 'malformed apply options are refused');
}

if ($failures) {
    file_put_contents("php://stderr", "php suite ($mode): " . count($failures) . " of $checks checks failed:\n  "
        . implode("\n  ", $failures) . "\n");
    exit(1);
}
echo "php suite ($mode): $checks checks passed\n";
