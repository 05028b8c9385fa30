# cmake -DMOE_LAYER_HEADER=<h> -DMOE_LAYER_NAME=<layer> -DMOE_LAYER_SPEC=<spec>
#       -P MoEMLIRCheckLayer.cmake
#
# Run by moe_add_layer(... NAME <layer>) after --emit=header: fails the build
# when the spec's layer is not the one the application was written against.
file(READ "${MOE_LAYER_HEADER}" text)
if(NOT text MATCHES "int32_t ${MOE_LAYER_NAME}_forward\\(")
  set(found "")
  if(text MATCHES "int32_t ([A-Za-z_][A-Za-z0-9_]*)_forward\\(")
    set(found " (it declares ${CMAKE_MATCH_1}_forward)")
  endif()
  file(REMOVE "${MOE_LAYER_HEADER}")
  message(FATAL_ERROR
    "moe_add_layer: the spec ${MOE_LAYER_SPEC} does not define layer "
    "'${MOE_LAYER_NAME}'${found}; fix NAME or the spec's `name`")
endif()
