# install.cmake -- what `cmake --install build --prefix PREFIX` puts where, and the .deb that
# scripts/package makes of the same files with CPack (prefix /usr):
#   PREFIX/bin/luasock                          the binary
#   PREFIX/share/luasock/lua/luasock/*.lua      its runtime, found relative to the binary
#   PREFIX/share/luasock/examples/              the example handlers and clients
#   PREFIX/lib/systemd/system/luasock.service   examples/luasock.service, run from PREFIX/bin
#   PREFIX/include/luasock.h                    the C API of modules loaded into the server
install(TARGETS luasock RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${RUNTIME_LUA} DESTINATION ${CMAKE_INSTALL_DATADIR}/luasock/lua/luasock)
file(GLOB EXAMPLES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/examples/*.lua
                                     ${CMAKE_SOURCE_DIR}/examples/*.html)
install(FILES ${EXAMPLES} DESTINATION ${CMAKE_INSTALL_DATADIR}/luasock/examples)
install(FILES ${CMAKE_SOURCE_DIR}/include/luasock.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# systemd also reads units from /usr/local/lib/systemd/system, so the unit works from either prefix.
set(LUASOCK_SYSTEMD_UNITDIR lib/systemd/system CACHE STRING
    "Where the systemd unit goes: relative to the install prefix, or absolute")
if(IS_ABSOLUTE "${LUASOCK_SYSTEMD_UNITDIR}")
  set(unit_dir "${LUASOCK_SYSTEMD_UNITDIR}")
else()
  set(unit_dir "\${CMAKE_INSTALL_PREFIX}/${LUASOCK_SYSTEMD_UNITDIR}")
endif()
# The unit names the binary where this install puts it: the prefix is only known at install time
# (--prefix, or CPack's /usr), so the unit is written then, into a directory of the build tree
# for that destination (installs to two prefixes at once do not share it), installed, removed.
if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}")
  set(installed_binary "${CMAKE_INSTALL_BINDIR}/luasock")
else()
  set(installed_binary "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/luasock")
endif()
install(CODE "
  string(MD5 destination \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}\")
  set(unit_file \"${CMAKE_BINARY_DIR}/install/\${destination}/luasock.service\")
  file(READ \"${CMAKE_SOURCE_DIR}/examples/luasock.service\" unit)
  string(REPLACE \"/usr/local/bin/luasock\" \"${installed_binary}\" unit \"\${unit}\")
  file(WRITE \"\${unit_file}\" \"\${unit}\")
  file(INSTALL DESTINATION \"${unit_dir}\" TYPE FILE
       FILES \"\${unit_file}\")
  file(REMOVE_RECURSE \"${CMAKE_BINARY_DIR}/install/\${destination}\")
")

# The .deb (scripts/package). dpkg-shlibdeps (dpkg-dev) names the run-time library packages
# of the release it builds on (liblua5.4-0, libev4, libc-ares2, libssl3 or libssl3t64, ...), so
# the package installs with dpkg -i there; lua-cjson is only for scripts that speak JSON.
set(CPACK_PACKAGE_NAME luasock)
set(CPACK_PACKAGE_VENDOR luasock)
set(CPACK_PACKAGE_CONTACT "luasock maintainers <maintainers@users.noreply.r-seed-1ef3739e.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "network server that runs Lua 5.4 connection handlers")
set(CPACK_PACKAGE_DESCRIPTION "luasock's C core owns a libev event loop, non-blocking I/O, \
timeouts and backpressure; each connection's handler is a Lua 5.4 script in plain blocking \
style, run in a coroutine.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS lua-cjson)
include(CPack)
