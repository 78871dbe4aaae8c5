<?php
/*
 * opcache.preload script for php-fpm / php-cgi: compiles the wrapper classes once at start-up.
 * Pair it with ffi.preload=/path/to/pbxfw_php.h (FFI_SCOPE "pbxfw") and ffi.enable=preload;
 * scripts then use Pbxfw::fromScope(). See the README of the C API (docs/c-api.md).
 */
opcache_compile_file(__DIR__ . '/Pbxfw.php');
