<?php
/*
 * pbxfw for a PBX's PHP module, through PHP's FFI and the pbxfw C API (docs/c-api.md).
 *
 *   $pbxfw  = Pbxfw::fromScope();                     // ffi.preload of pbxfw_php.h (php-fpm)
 *   $pbxfw  = Pbxfw::fromLibrary('/usr/lib/libpbxfw.so'); // FFI::cdef (php-cli, ffi.enable=1)
 *   $policy = $pbxfw->parsePolicy(file_get_contents('/etc/pbxfw/pbxfw.toml'));
 *   $answer = $policy->explain(['iface' => 'eth0', 'src' => '203.0.113.10',
 *                               'proto' => 'udp', 'dport' => 5060]);
 *
 * A module running without root (php-fpm's pool user) uses PbxfwClient instead: the same
 * methods (the PbxfwApi interface), answered by the pbxfw daemon through its control socket
 * (docs/control-socket.md), in plain PHP (no FFI needed):
 *
 *   $pbxfw = new PbxfwClient();                       // /run/pbxfw/control.sock
 *   $pbxfw->applyPolicy($toml, '', ['client' => $_SERVER['REMOTE_ADDR'] . ':443', 'save' => true]);
 *
 * Every failure is a PbxfwException carrying the C API's result code and, for an invalid
 * policy, every diagnostic. Every buffer and object the C library hands out is freed here,
 * objects when their PHP wrapper is destroyed: nothing leaks, whatever the caller does.
 */

declare(strict_types=1);

final class PbxfwException extends RuntimeException
{
    /** The C API's result codes (pbxfw_result), stable numbers. */
    public const NULL_POINTER = 1;
    public const UTF8 = 2;
    public const PARSE = 3;
    public const INVALID = 4;
    public const ARGUMENT = 5;
    public const UNSUPPORTED = 6;
    public const KERNEL = 7;
    public const STATE = 8;
    public const PANIC = 9;
    public const LOCKED = 10;
    public const REFUSED = 11;
    public const IO = 12;
    public const DENIED = 13;
    public const UNAVAILABLE = 14;

    /** @param list<array{path: string, severity: string, message: string, value?: string}> $diagnostics */
    public function __construct(string $message, int $code, public readonly array $diagnostics = [])
    {
        parent::__construct($message, $code);
    }
}

/**
 * What the local class (Pbxfw, root, through FFI) and the control socket's client
 * (PbxfwClient, any member of the pbxfw groups) both do, with the same arguments, results and
 * exceptions: a module can switch between them.
 */
interface PbxfwApi
{
    public function version(): string;

    public function status(string $backend = ''): array;

    public function confirm(): string;

    public function rollback(string $backend = ''): string;

    public function bans(string $backend = ''): array;

    public function unban(array $prefixes, string $backend = ''): array;

    public function disable(string $backend = ''): bool;

    /**
     * A certificate-renewal window (docs/acme.md): `$action` is `open` (for `$seconds`, 1 to
     * 3600), `close` or `status`. Returns backend, open, expires_in, until, port and request.
     */
    public function acme(string $action = 'status', int $seconds = 60, string $backend = ''): array;

    /**
     * Apply policy text (`toml` or `json`). `$options` as PbxfwPolicy::apply(), plus `client`:
     * the address (ADDR:PORT) this module's own user reaches the host from, whose access must
     * survive, e.g. `$_SERVER['REMOTE_ADDR'] . ':' . $_SERVER['SERVER_PORT']`.
     */
    public function applyPolicy(string $text, string $backend = '', array $options = [], string $format = 'toml'): array;

    /**
     * Ban by hand under the installed policy: `$request` is prefix, seconds, and optionally
     * reason, admins, client and force.
     */
    public function ban(array $request, string $backend = ''): array;
}

final class Pbxfw implements PbxfwApi
{
    private function __construct(private readonly FFI $ffi)
    {
    }

    /** The definitions preloaded by `ffi.preload=…/pbxfw_php.h` (FFI_SCOPE "pbxfw"). */
    public static function fromScope(string $scope = 'pbxfw'): self
    {
        return new self(FFI::scope($scope));
    }

    /** Load the library directly (needs `ffi.enable=1`). The header defaults to the one beside. */
    public static function fromLibrary(string $library, ?string $header = null): self
    {
        $header ??= __DIR__ . '/../include/pbxfw_php.h';
        $text = file_get_contents($header);
        if ($text === false) {
            throw new PbxfwException("cannot read $header", PbxfwException::ARGUMENT);
        }
        // FFI::cdef takes declarations only: drop the FFI_SCOPE/FFI_LIB lines FFI::load reads.
        $decls = preg_replace('/^#define .*$/m', '', $text);
        return new self(FFI::cdef($decls, $library));
    }

    public function version(): string
    {
        // FFI returns a `const char *` result as a PHP string.
        return (string) $this->ffi->pbxfw_version();
    }

    /** Parse and validate a policy; `$format` is `toml` or `json`. */
    public function parsePolicy(string $text, string $format = 'toml'): PbxfwPolicy
    {
        $formats = ['toml' => 0, 'json' => 1];
        if (!isset($formats[$format])) {
            throw new PbxfwException("unknown format '$format' (toml, json)", PbxfwException::ARGUMENT);
        }
        $out = $this->ffi->new('pbxfw_policy*');
        $this->call(fn ($err) => $this->ffi->pbxfw_policy_parse(
            $text, strlen($text), $formats[$format], FFI::addr($out), $err
        ));
        return new PbxfwPolicy($this, $out);
    }

    /**
     * Ports, RTP/UDPTL ranges and trunks an Asterisk configuration implies: `policy` (a
     * fragment in the policy's shape), `origins` (path, `file:line`, what), `notes`, `files`,
     * `dir`. A policy whose `pbx.discover` names the directory has this merged already.
     */
    public function discover(string $dir = '/etc/asterisk'): array
    {
        return $this->json(fn ($buf, $err) => $this->ffi->pbxfw_discover(
            $dir, strlen($dir), $buf, $err
        ));
    }

    /**
     * What is loaded and what the host keeps about it, as `pbxfw status --format json`:
     * backend, loaded, fingerprint, sets, counters, pending_confirmation, safe_mode, hostnames,
     * discovery, responsive, state_problems.
     */
    public function status(string $backend = ''): array
    {
        return self::decode($this->statusJson($backend));
    }

    /** The same as the JSON text itself, byte for byte what `pbxfw status --format json` prints. */
    public function statusJson(string $backend = ''): string
    {
        return $this->text(fn ($buf, $err) => $this->ffi->pbxfw_kernel_status(
            $backend, strlen($backend), $buf, $err
        ));
    }

    /** Keep the ruleset an apply with `confirm` loaded; returns its fingerprint. */
    public function confirm(): string
    {
        return $this->text(fn ($buf, $err) => $this->ffi->pbxfw_kernel_confirm($buf, $err));
    }

    /**
     * Go back now to the ruleset before an apply with `confirm`, on the backend that apply used
     * (naming another is refused); says what happened.
     */
    public function rollback(string $backend = ''): string
    {
        return $this->text(fn ($buf, $err) => $this->ffi->pbxfw_kernel_rollback(
            $backend, strlen($backend), $buf, $err
        ));
    }

    /**
     * The bans in force, as `pbxfw bans --format json`: backend, loaded, bans (each with
     * prefix, origin, reason, since, until, expires_in, strikes, by, set).
     */
    public function bans(string $backend = ''): array
    {
        return $this->json(fn ($buf, $err) => $this->ffi->pbxfw_kernel_bans(
            $backend, strlen($backend), $buf, $err
        ));
    }

    /**
     * Lift every ban of `$prefixes` (addresses or CIDRs) for good: the kernel's, bans by hand,
     * and the daemon's memory of them. Returns prefixes, lifted and loaded.
     */
    public function unban(array $prefixes, string $backend = ''): array
    {
        $json = json_encode(array_values($prefixes), JSON_THROW_ON_ERROR);
        return $this->json(fn ($buf, $err) => $this->ffi->pbxfw_kernel_unban(
            $backend, strlen($backend), $json, strlen($json), $buf, $err
        ));
    }

    public function acme(string $action = 'status', int $seconds = 60, string $backend = ''): array
    {
        return $this->json(fn ($buf, $err) => $this->ffi->pbxfw_kernel_acme(
            $backend, strlen($backend), $action, strlen($action), max(0, $seconds), $buf, $err
        ));
    }

    /** Remove pbxfw's rules and sets from the kernel; whether anything was loaded. */
    public function disable(string $backend = ''): bool
    {
        $was = $this->ffi->new('bool');
        $this->call(fn ($err) => $this->ffi->pbxfw_kernel_disable(
            $backend, strlen($backend), FFI::addr($was), $err
        ));
        return (bool) $was->cdata;
    }

    public function applyPolicy(string $text, string $backend = '', array $options = [], string $format = 'toml'): array
    {
        if (!empty($options['save'])) {
            throw new PbxfwException(
                "save: only the daemon writes its policy file (PbxfwClient); write the file yourself",
                PbxfwException::ARGUMENT
            );
        }
        unset($options['save']);
        return $this->parsePolicy($text, $format)->apply($backend, self::withClient($options));
    }

    public function ban(array $request, string $backend = '', string $policyFile = '/etc/pbxfw/pbxfw.toml'): array
    {
        $text = @file_get_contents($policyFile);
        if ($text === false) {
            throw new PbxfwException("cannot read $policyFile", PbxfwException::IO);
        }
        $format = str_ends_with($policyFile, '.json') ? 'json' : 'toml';
        return $this->parsePolicy($text, $format)->ban(self::withClient($request), $backend);
    }

    /** The `client` option is one more administrator to the local calls. */
    private static function withClient(array $options): array
    {
        if (isset($options['client'])) {
            $options['admins'] = [...($options['admins'] ?? []), $options['client']];
            unset($options['client']);
        }
        return $options;
    }

    /** @internal */
    public function ffi(): FFI
    {
        return $this->ffi;
    }

    /**
     * Run `$f($err)` with a fresh error slot; on failure turn the error object into an
     * exception, and free it either way.
     * @internal
     */
    public function call(callable $f): void
    {
        $err = $this->ffi->new('pbxfw_error*');
        $code = $f(FFI::addr($err));
        if ($code === 0) {
            return;
        }
        try {
            if (FFI::isNull($err)) {
                throw new PbxfwException("pbxfw error $code", $code);
            }
            $message = (string) $this->ffi->pbxfw_error_message($err);
            $diagnostics = [];
            $buf = $this->ffi->new('pbxfw_buf');
            if ($this->ffi->pbxfw_error_diagnostics($err, FFI::addr($buf)) === 0) {
                $diagnostics = self::decode($this->take($buf));
            }
            throw new PbxfwException($message, $code, $diagnostics);
        } finally {
            $this->ffi->pbxfw_error_free(FFI::addr($err));
        }
    }

    /**
     * Run `$f($buf, $err)` and return the buffer as text, freed.
     * @internal
     */
    public function text(callable $f): string
    {
        $buf = $this->ffi->new('pbxfw_buf');
        $this->call(fn ($err) => $f(FFI::addr($buf), $err));
        return $this->take($buf);
    }

    /**
     * The same, decoded from JSON.
     * @internal
     */
    public function json(callable $f): array
    {
        return self::decode($this->text($f));
    }

    private function take(FFI\CData $buf): string
    {
        try {
            return $buf->len > 0 ? FFI::string($buf->ptr, $buf->len) : '';
        } finally {
            $this->ffi->pbxfw_buf_free(FFI::addr($buf));
        }
    }

    private static function decode(string $json): array
    {
        return json_decode($json, true, 512, JSON_THROW_ON_ERROR);
    }
}

/** A validated policy. Immutable; freed when the object goes away. */
final class PbxfwPolicy
{
    /** @internal */
    public function __construct(private readonly Pbxfw $pbxfw, private FFI\CData $ptr)
    {
    }

    public function __destruct()
    {
        $this->pbxfw->ffi()->pbxfw_policy_free(FFI::addr($this->ptr));
    }

    /** @internal */
    public function ptr(): FFI\CData
    {
        return $this->ptr;
    }

    /** The warnings of the valid policy. */
    public function diagnostics(): array
    {
        return $this->pbxfw->json(fn ($buf, $err) =>
            $this->pbxfw->ffi()->pbxfw_policy_diagnostics($this->ptr, $buf, $err));
    }

    public function fingerprint(): string
    {
        return $this->pbxfw->text(fn ($buf, $err) =>
            $this->pbxfw->ffi()->pbxfw_policy_fingerprint($this->ptr, $buf, $err));
    }

    /** The rules as text: `nft`, `iptables` or `ir`. */
    public function compile(string $backend = 'nft'): string
    {
        return $this->pbxfw->text(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_policy_compile(
            $this->ptr, $backend, strlen($backend), $buf, $err
        ));
    }

    /**
     * What happens to a packet: `['iface' => 'eth0', 'src' => '203.0.113.10', 'proto' => 'udp',
     * 'dport' => 5060]`, optionally `sport`, `icmp_type`, `state`, `registered`. Returns
     * verdict, zone, decided_by, step, step_name and rule.
     */
    public function explain(array $packet): array
    {
        $json = json_encode($packet, JSON_THROW_ON_ERROR);
        return $this->pbxfw->json(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_policy_explain(
            $this->ptr, $json, strlen($json), $buf, $err
        ));
    }

    /**
     * Apply to the kernel as `pbxfw apply` does, anti-lockout first. `$options`: `confirm`
     * (seconds until it is rolled back unless `Pbxfw::confirm()` comes), `admins` (addresses
     * whose access must survive, `ADDR` for SSH or `ADDR:PORT`; a web module passes its
     * client's, e.g. `$_SERVER['REMOTE_ADDR'] . ':443'`), `force`, `counters`. Returns
     * fingerprint and elapsed_ms, or with `confirm` rolled_back_at_ms. A refusal is a
     * PbxfwException with code REFUSED; nothing changed.
     */
    public function apply(string $backend = '', array $options = []): array
    {
        $json = $options === [] ? '' : json_encode($options, JSON_THROW_ON_ERROR);
        return $this->pbxfw->json(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_kernel_apply(
            $this->ptr, $backend, strlen($backend), $json, strlen($json), $buf, $err
        ));
    }

    /**
     * Carry out the actions a PbxfwResponsive returned (bans, slow lane, registrations and
     * their grants) in the kernel, this policy being the applied one. `$now`: when they were
     * decided (0: now). Returns updates, elements and failures.
     */
    public function carryOut(array $actions, string $backend = '', int $now = 0): array
    {
        $json = json_encode($actions, JSON_THROW_ON_ERROR);
        return $this->pbxfw->json(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_kernel_carry_out(
            $this->ptr, $backend, strlen($backend), $json, strlen($json), $now, $buf, $err
        ));
    }

    /**
     * Ban by hand under this policy: `$request` is prefix, seconds, and optionally reason,
     * admins and force. What the policy protects is never banned (a PbxfwException with code
     * REFUSED). Returns prefix, until, until_iso, reason and set.
     */
    public function ban(array $request, string $backend = ''): array
    {
        $json = json_encode($request, JSON_THROW_ON_ERROR);
        return $this->pbxfw->json(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_kernel_ban(
            $this->ptr, $backend, strlen($backend), $json, strlen($json), $buf, $err
        ));
    }

    /** A fresh responsive state machine configured by this policy. */
    public function responsive(): PbxfwResponsive
    {
        $out = $this->pbxfw->ffi()->new('pbxfw_responsive*');
        $this->pbxfw->call(fn ($err) =>
            $this->pbxfw->ffi()->pbxfw_responsive_new($this->ptr, FFI::addr($out), $err));
        return new PbxfwResponsive($this->pbxfw, $out);
    }

    /** A state machine from a snapshot, reconfigured by this policy. */
    public function restoreResponsive(string $snapshot): PbxfwResponsive
    {
        $out = $this->pbxfw->ffi()->new('pbxfw_responsive*');
        $this->pbxfw->call(fn ($err) => $this->pbxfw->ffi()->pbxfw_responsive_restore(
            $this->ptr, $snapshot, strlen($snapshot), FFI::addr($out), $err
        ));
        return new PbxfwResponsive($this->pbxfw, $out);
    }
}

/** The responsive layer's state machine. Not to be shared between threads. */
final class PbxfwResponsive
{
    /** @internal */
    public function __construct(private readonly Pbxfw $pbxfw, private FFI\CData $ptr)
    {
    }

    public function __destruct()
    {
        $this->pbxfw->ffi()->pbxfw_responsive_free(FFI::addr($this->ptr));
    }

    /**
     * Feed one security event (an array or a JSON-lines record, docs/events.md) at `$now`
     * (Unix seconds; 0: the event's own `at`, else the clock). Returns the actions to carry out.
     */
    public function onEvent(array|string $event, int $now = 0): array
    {
        $json = is_string($event) ? $event : json_encode($event, JSON_THROW_ON_ERROR);
        return $this->pbxfw->json(fn ($buf, $err) => $this->pbxfw->ffi()->pbxfw_responsive_on_event(
            $this->ptr, $json, strlen($json), $now, $buf, $err
        ));
    }

    public function tick(int $now): array
    {
        return $this->pbxfw->json(fn ($buf, $err) =>
            $this->pbxfw->ffi()->pbxfw_responsive_tick($this->ptr, $now, $buf, $err));
    }

    /** The active bans at `$now`: a list of ['prefix' => …, 'until' => …]. */
    public function bans(int $now): array
    {
        return $this->pbxfw->json(fn ($buf, $err) =>
            $this->pbxfw->ffi()->pbxfw_responsive_bans($this->ptr, $now, $buf, $err));
    }

    public function snapshot(): string
    {
        return $this->pbxfw->text(fn ($buf, $err) =>
            $this->pbxfw->ffi()->pbxfw_responsive_snapshot($this->ptr, $buf, $err));
    }
}

/**
 * The firewall through the pbxfw daemon's control socket, for a module that is not root (a
 * php-fpm pool whose user is in the `pbxfw` group to look, and `pbxfw-admin` to change
 * things). Plain PHP: no FFI. The daemon runs the same procedures as the command line as root;
 * refusals (anti-lockout for `client`, the lock file) are the same PbxfwException codes.
 */
final class PbxfwClient implements PbxfwApi
{
    /** @var resource|null */
    private $socket = null;
    private int $nextId = 1;
    private string $path;

    /**
     * Connect to `$path` (default: /run/pbxfw/control.sock, or $PBXFW_CONTROL_SOCKET); each call
     * waits at most `$timeout` seconds for its answer. A call that timed out leaves the
     * connection mid-answer: the next one connects again.
     */
    public function __construct(string $path = '', private float $timeout = 30.0)
    {
        if ($path === '') {
            $path = getenv('PBXFW_CONTROL_SOCKET') ?: '/run/pbxfw/control.sock';
        }
        $this->path = $path;
        $this->connect();
    }

    private function connect(): void
    {
        $errno = 0;
        $errstr = '';
        $socket = @stream_socket_client("unix://{$this->path}", $errno, $errstr, $this->timeout);
        if ($socket === false) {
            // EACCES: not in the socket's group.
            $code = $errno === 13 ? PbxfwException::DENIED : PbxfwException::UNAVAILABLE;
            throw new PbxfwException("{$this->path}: $errstr", $code);
        }
        $this->socket = $socket;
    }

    public function __destruct()
    {
        if (is_resource($this->socket)) {
            fclose($this->socket);
        }
    }

    /** Call `$method` with `$params` as the protocol names them (docs/control-socket.md). */
    public function call(string $method, array $params = []): mixed
    {
        if (!is_resource($this->socket)) {
            $this->connect();
        }
        $id = $this->nextId++;
        $line = json_encode(
            ['v' => 1, 'id' => $id, 'method' => $method, 'params' => (object) $params],
            JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES
        ) . "\n";
        $deadline = microtime(true) + $this->timeout;
        for ($done = 0; $done < strlen($line);) {
            $this->wait($deadline);
            $n = @fwrite($this->socket, substr($line, $done));
            if ($n === false || $n === 0) {
                // It may have said why before closing (denied, busy).
                $said = @fgets($this->socket);
                $r = $said === false ? null : json_decode($said, true);
                if (is_array($r) && isset($r['error'])) {
                    $this->throwFor($r['error']);
                }
                $this->fail('the daemon closed the connection');
            }
            $done += $n;
        }
        while (true) {
            $answer = '';
            while (!str_ends_with($answer, "\n")) {
                $this->wait($deadline);
                $chunk = fgets($this->socket);
                if ($chunk === false) {
                    if (stream_get_meta_data($this->socket)['timed_out']) {
                        // Mid-answer: this connection cannot be used again.
                        fclose($this->socket);
                        $this->socket = null;
                        $this->fail(sprintf('no answer within %.1f s', $this->timeout));
                    }
                    $this->fail('the daemon closed the connection without an answer');
                }
                $answer .= $chunk;
            }
            $r = json_decode($answer, true, 512);
            if (!is_array($r) || !array_key_exists('id', $r)) {
                $this->fail('an answer that is not the protocol\'s');
            }
            if ($r['id'] !== null && $r['id'] !== $id) {
                continue;
            }
            if ($r['ok'] ?? false) {
                return $r['result'];
            }
            $this->throwFor($r['error'] ?? []);
        }
    }

    private function throwFor(array $e): never
    {
        throw new PbxfwException(
            (string) ($e['message'] ?? 'the daemon refused the request'),
            (int) ($e['code'] ?? PbxfwException::UNAVAILABLE),
            $e['diagnostics'] ?? []
        );
    }

    public function version(): string
    {
        return $this->call('version')['version'];
    }

    public function status(string $backend = ''): array
    {
        return $this->call('status', self::backend($backend));
    }

    /** The status as JSON text (the same document as Pbxfw::statusJson(), re-encoded). */
    public function statusJson(string $backend = ''): string
    {
        return json_encode($this->status($backend), JSON_THROW_ON_ERROR | JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES);
    }

    public function confirm(): string
    {
        return $this->call('confirm');
    }

    public function rollback(string $backend = ''): string
    {
        return $this->call('rollback', self::backend($backend));
    }

    public function bans(string $backend = ''): array
    {
        return $this->call('bans', self::backend($backend));
    }

    public function unban(array $prefixes, string $backend = ''): array
    {
        return $this->call('unban', ['prefixes' => array_values($prefixes)] + self::backend($backend));
    }

    public function disable(string $backend = ''): bool
    {
        return (bool) $this->call('disable', self::backend($backend))['was_loaded'];
    }

    public function acme(string $action = 'status', int $seconds = 60, string $backend = ''): array
    {
        if (!in_array($action, ['open', 'close', 'status'], true)) {
            throw new PbxfwException("action \"$action\" is not open, close or status", PbxfwException::ARGUMENT);
        }
        $params = self::backend($backend) + ($action === 'open' ? ['seconds' => $seconds] : []);
        return $this->call("acme_$action", $params);
    }

    /**
     * `$options`: confirm, admins, client, force, counters, and `save` (also make it the
     * daemon's policy file, so that the boot and the daemon follow it; with `confirm`, once
     * confirmed).
     */
    public function applyPolicy(string $text, string $backend = '', array $options = [], string $format = 'toml'): array
    {
        return $this->call('apply', ['policy' => $text, 'format' => $format] + self::backend($backend) + $options);
    }

    public function ban(array $request, string $backend = ''): array
    {
        return $this->call('ban', $request + self::backend($backend));
    }

    /** What happens to `$packet` under the daemon's policy, or with `$live` in the kernel now. */
    public function explain(array $packet, bool $live = false, string $backend = ''): array
    {
        return $this->call('explain', ['packet' => $packet, 'live' => $live] + self::backend($backend));
    }

    /** What each zone of the daemon's policy opens. */
    public function show(?string $zone = null): array
    {
        return $this->call('show', $zone === null ? [] : ['zone' => $zone]);
    }

    /** A policy text's diagnostics: ok, errors, warnings, diagnostics. */
    public function check(string $text, string $format = 'toml'): array
    {
        return $this->call('check', ['policy' => $text, 'format' => $format]);
    }

    /** What the daemon's Asterisk configuration implies. */
    public function discover(): array
    {
        return $this->call('discover');
    }

    /** Put `$addr` in the trusted zone; `$options`: admins, client, force. */
    public function trust(string $addr, array $options = [], string $backend = ''): array
    {
        return $this->call('trust', ['entries' => [$addr]] + $options + self::backend($backend));
    }

    public function untrust(string $addr, array $options = [], string $backend = ''): array
    {
        return $this->call('untrust', ['entries' => [$addr]] + $options + self::backend($backend));
    }

    public function blacklistAdd(array $entries, array $options = [], string $backend = ''): array
    {
        return $this->call('blacklist_add', ['entries' => array_values($entries)] + $options + self::backend($backend));
    }

    public function blacklistDel(array $entries, array $options = [], string $backend = ''): array
    {
        return $this->call('blacklist_del', ['entries' => array_values($entries)] + $options + self::backend($backend));
    }

    /** Put `$ids` (addresses, CIDRs, hostnames) in `$zone`, as `fwconsole firewall add`. */
    public function zoneAdd(string $zone, array $ids, array $options = [], string $backend = ''): array
    {
        return $this->call('zone_add', ['zone' => $zone, 'entries' => array_values($ids)] + $options + self::backend($backend));
    }

    /** Take `$ids` out of `$zone`. */
    public function zoneDel(string $zone, array $ids, array $options = [], string $backend = ''): array
    {
        return $this->call('zone_del', ['zone' => $zone, 'entries' => array_values($ids)] + $options + self::backend($backend));
    }

    /** A VPN client connected from `$address` as `$identity` (docs/vpn.md); the VPN role. */
    public function vpnConnect(string $address, string $identity, int $seconds = 0): array
    {
        $p = ['address' => $address, 'identity' => $identity];
        return $this->call('vpn_connect', $seconds > 0 ? $p + ['seconds' => $seconds] : $p);
    }

    /** The VPN client is gone: its grants end now. */
    public function vpnDisconnect(string $address, string $identity): array
    {
        return $this->call('vpn_disconnect', ['address' => $address, 'identity' => $identity]);
    }

    /** What each zone (or `$zone`) holds: aliases, description, interfaces, networks. */
    public function zones(?string $zone = null): array
    {
        return $this->call('zones', $zone === null ? [] : ['zone' => $zone]);
    }

    private static function backend(string $backend): array
    {
        return $backend === '' ? [] : ['backend' => $backend];
    }

    private function wait(float $deadline): void
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            $this->fail(sprintf('no answer within %.1f s', $this->timeout));
        }
        stream_set_timeout($this->socket, (int) $left, (int) (($left - floor($left)) * 1e6));
    }

    private function fail(string $why): never
    {
        throw new PbxfwException("the pbxfw daemon is unavailable: $why", PbxfwException::UNAVAILABLE);
    }
}
